"""When each token runs out, and when the next heartbeat sweep and ping are due.

Pure: times are the actor's clock, passed in. The expiry heap holds one entry per token a
connection has had; entries of closed connections and refreshed tokens are compacted away
once they outnumber the live connections, so it stays proportional to them.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping

from roomcast.core.peer import Peer
from roomcast.settings import Settings


class Deadlines:
    """Token expiries (a heap) and the heartbeat schedule."""

    def __init__(self, settings: Settings, now: float = 0.0) -> None:
        self.settings = settings
        self.period = min(settings.heartbeat_interval, settings.heartbeat_timeout / 3)
        self.next_sweep = now + self.period
        self.next_ping = now + settings.heartbeat_interval
        self._expiries: list[tuple[float, int, Peer]] = []
        self._refreshes: list[tuple[float, int, Peer]] = []  # refresh hook asks (§11)
        self._seq = itertools.count()

    def restart(self, now: float) -> None:
        """Start the heartbeat schedule from `now` (when the actor starts its clock)."""
        self.next_sweep = now + self.period
        self.next_ping = now + self.settings.heartbeat_interval

    def next_wake(self) -> float:
        """The earliest moment something is due."""
        wake = min(self.next_sweep, self.next_ping)
        if self._expiries:
            wake = min(wake, self._expiries[0][0])
        if self._refreshes:
            wake = min(wake, self._refreshes[0][0])
        return wake

    def refresh_at(self, peer: Peer, at: float) -> None:
        """Ask the refresh hook about `peer` at `at` (the actor's clock)."""
        heapq.heappush(self._refreshes, (at, next(self._seq), peer))

    def refreshes_due(self, now: float, live: Mapping[str, Peer]) -> list[Peer]:
        """Live connections whose refresh is due by `now`."""
        out: list[Peer] = []
        seen: set[str] = set()
        while self._refreshes and self._refreshes[0][0] <= now:
            _, _, peer = heapq.heappop(self._refreshes)
            if live.get(peer.id) is peer and not peer.closing and peer.id not in seen:
                seen.add(peer.id)
                out.append(peer)
        return out

    def expiry_at(self, peer: Peer, wall_base: float) -> float:
        """When `peer`'s current token runs out, on the actor's clock (leeway included, and
        the grace of a connection whose refresh hook is failing)."""
        return peer.principal.expires_at + self.settings.jwt_leeway + peer.grace - wall_base

    def schedule(self, peer: Peer, wall_base: float, live: Mapping[str, Peer]) -> None:
        """Remember when this connection's token runs out."""
        heapq.heappush(self._expiries, (self.expiry_at(peer, wall_base), next(self._seq), peer))
        self.compact(wall_base, live)

    def compact(self, wall_base: float, live: Mapping[str, Peer]) -> None:
        """Drop entries of closed connections and refreshed tokens once they outnumber the
        live connections: each live connection keeps its newest entry (its current token)."""
        if len(self._expiries) <= 2 * len(live) + 64:
            return
        current: dict[str, tuple[float, int, Peer]] = {}
        for entry in self._expiries:
            peer = entry[2]
            if live.get(peer.id) is peer:
                kept = current.get(peer.id)
                if kept is None or entry[1] > kept[1]:
                    current[peer.id] = entry
        self._expiries = list(current.values())
        heapq.heapify(self._expiries)

    def expired(self, now: float, wall_base: float, live: Mapping[str, Peer]) -> list[Peer]:
        """Live connections whose token has run out by `now` (a refreshed one is not)."""
        out: list[Peer] = []
        seen: set[str] = set()
        while self._expiries and self._expiries[0][0] <= now:
            _, _, peer = heapq.heappop(self._expiries)
            if peer.id not in live or peer.closing:
                continue
            at = self.expiry_at(peer, wall_base)
            if at <= now + 1e-6:
                if peer.id not in seen:  # one connection may have several entries due
                    seen.add(peer.id)
                    out.append(peer)
            else:  # refreshed since, or the clock was re-anchored: due later
                heapq.heappush(self._expiries, (at, next(self._seq), peer))
        return out

    def heartbeat_due(self, now: float) -> tuple[bool, bool]:
        """(sweep now, ping too); moves the schedule on when due."""
        if now < self.next_sweep and now < self.next_ping:
            return False, False
        ping = now >= self.next_ping
        if ping:
            self.next_ping = now + self.settings.heartbeat_interval
        self.next_sweep = now + self.period
        return True, ping

    def __len__(self) -> int:
        return len(self._expiries)
