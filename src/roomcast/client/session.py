"""The client's bookkeeping of its rooms across connections: which rooms it keeps (with
what filters), where it is in each room's stream (epoch and last offset), which messages
are duplicates or replays, and what to resubscribe with after a reconnect.

A position is a pair (epoch, offset): an offset counts only within its epoch. Messages
carry no epoch; the epoch they belong to is the last one the server named for the room,
in a `subscribed` entry or a `reset` frame (which the server sends before the first
message of a new stream, protocol §17). So a `reset` moves the position into the new
stream, and the new stream's offsets 1, 2, ... are never taken for the old one's.

Pure: no IO and no trio, so every rule here is tested by feeding it frames.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from roomcast.client.events import (
    Position,
    Recovery,
    Reset,
    SubscribeResult,
    position,
    subscribe_result,
)

__all__ = ["MAX_ROOMS", "NO_FILTERS", "Delivery", "Filters", "Session", "Subscribed"]

MAX_ROOMS = 100  # rooms in one subscribe command (protocol §4)


@dataclass(frozen=True)
class Filters:
    """A subscription's filters, hashable so rooms with the same ones share a command."""

    events: tuple[str, ...] | None
    where: tuple[tuple[str, str], ...] | None  # (key, JSON value) pairs: hashable
    presence: bool

    @classmethod
    def make(cls, events: Sequence[str] | None, where: Mapping[str, Any] | None,
             presence: bool) -> Filters:
        """Filters from the arguments of `subscribe`."""
        return cls(
            tuple(events) if events is not None else None,
            tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in where.items()))
            if where is not None else None,
            presence,
        )

    def fields(self) -> dict[str, Any]:
        """The filters as fields of a `subscribe` frame."""
        out: dict[str, Any] = {}
        if self.events is not None:
            out["events"] = list(self.events)
        if self.where is not None:
            out["where"] = {k: json.loads(v) for k, v in self.where}
        if self.presence:
            out["presence"] = True
        return out


#: The filters of a plain subscribe (and of a room the server subscribed the client to).
NO_FILTERS = Filters(None, None, False)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What to do with a `message` frame: hand it to the app or not, and whether it is a
    replay of the server's recovery."""

    deliver: bool
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Subscribed:
    """What a `subscribed` reply means: each room's result (for the callers waiting on it),
    and the recoveries to tell the app about (for rooms resubscribed with `since`)."""

    results: list[SubscribeResult]
    recoveries: list[Recovery]


class Session:
    """Rooms, filters and positions of one client across all its connections."""

    def __init__(self) -> None:
        self.subs: dict[str, Filters] = {}
        self.positions: dict[str, Position] = {}
        # Of the current connection only: subscribe commands not yet answered (id -> rooms
        # and the `since` sent), and per room the offset up to which messages are replays.
        self.in_flight: dict[int, tuple[list[str], dict[str, Position]]] = {}
        self.replay_until: dict[str, int] = {}

    def new_connection(self) -> None:
        """A new connection began: what was in flight on the last one will not be answered."""
        self.in_flight.clear()
        self.replay_until.clear()

    # ------------------------------------------------------------ the app's commands
    def keep(self, rooms: Sequence[str], filters: Filters,
             since: Mapping[str, Any] | None) -> dict[str, Position]:
        """Keep `rooms` subscribed with `filters`; return the `since` to send for them (the
        positions the app gave, which become the rooms' positions)."""
        resume: dict[str, Position] = {}
        for room in rooms:
            self.subs[room] = filters
            if since is not None and room in since:
                resume[room] = self.positions[room] = position(since[room])
        return resume

    def forget(self, rooms: Sequence[str]) -> None:
        """Stop keeping `rooms` and forget where the client was in them."""
        for room in rooms:
            self.subs.pop(room, None)
            self.positions.pop(room, None)
            self.replay_until.pop(room, None)

    def sent_subscribe(self, command_id: int, rooms: list[str],
                       since: dict[str, Position]) -> None:
        """A subscribe command went out on the current connection."""
        self.in_flight[command_id] = (rooms, since)

    def resubscribe(self) -> Iterator[tuple[Filters, list[str], dict[str, Position]]]:
        """The subscribe commands that make a new connection hold every kept room: one per
        set of filters and at most MAX_ROOMS rooms, with `since` where a position is known.
        Rooms kept while the caller sends are given too."""
        sent: set[str] = set()
        while True:
            groups: dict[Filters, list[str]] = {}
            for room, filters in self.subs.items():
                if room not in sent:
                    groups.setdefault(filters, []).append(room)
            if not groups:
                return
            for filters, rooms in groups.items():
                for i in range(0, len(rooms), MAX_ROOMS):
                    chunk = rooms[i:i + MAX_ROOMS]
                    since = {r: self.positions[r] for r in chunk if r in self.positions}
                    sent.update(chunk)
                    yield filters, chunk, since

    # ------------------------------------------------------------ frames in
    def on_message(self, room: str, offset: int) -> Delivery:
        """A `message` frame, of the room's current epoch: a duplicate (at or below the
        room's position in that epoch) is dropped; otherwise the position moves to it."""
        at = self.positions.get(room)
        if at is not None:
            if offset <= at.offset:
                return Delivery(False)  # already seen: a replay overlapping what came live
            self.positions[room] = Position(offset, at.epoch)
        replayed = False
        until = self.replay_until.get(room)
        if until is not None:
            replayed = offset <= until
            if offset >= until:
                del self.replay_until[room]
        return Delivery(True, replayed)

    def on_subscribed(self, command_id: Any, rooms: Mapping[str, Any]) -> Subscribed:
        """A `subscribed` reply: each room's result, positions moved to what the server
        said, and a Recovery for each room that was resubscribed with `since`."""
        sent = self.in_flight.pop(command_id, None) if isinstance(command_id, int) else None
        since = sent[1] if sent else {}
        results: list[SubscribeResult] = []
        recoveries: list[Recovery] = []
        for room, entry in rooms.items():
            result = subscribe_result(room, entry)
            results.append(result)
            if not result.ok:
                if result.error != "unavailable":
                    self.subs.pop(room, None)
                    self.positions.pop(room, None)
            elif room in self.subs and result.offset is not None and result.epoch is not None:
                start = since.get(room)
                if start is None:
                    self.positions[room] = Position(result.offset, result.epoch)
                else:
                    recoveries.append(self._recover(result, start))
        return Subscribed(results, recoveries)

    def on_server_subscribed(self, rooms: Mapping[str, Any]) -> list[SubscribeResult]:
        """A `subscribed` frame with `"server": true` (§12): the server put this connection
        in rooms. They are kept like the app's own (so a reconnect resubscribes them with
        `since`); a room already kept keeps its position and filters (a resubscribe with
        `since` may be on its way: its recovery decides)."""
        results: list[SubscribeResult] = []
        for room, entry in rooms.items():
            result = subscribe_result(room, entry)
            results.append(result)
            if not result.ok or result.offset is None or result.epoch is None:
                continue
            self.subs.setdefault(room, NO_FILTERS)
            if room not in self.positions:
                self.positions[room] = Position(result.offset, result.epoch)
        return results

    def on_server_unsubscribed(self, rooms: Sequence[Any]) -> list[str]:
        """An `unsubscribed` frame with `"server": true`: the server took this connection
        out of rooms; they are no longer kept. The rooms, as names."""
        names = [str(room) for room in rooms]
        self.forget(names)
        return names

    def _recover(self, result: SubscribeResult, start: Position) -> Recovery:
        """Where a room resubscribed with `since` stands: the position after what the
        server will replay (or the new stream's top), and the Recovery that says so."""
        assert result.offset is not None and result.epoch is not None
        room = result.room
        offset = result.offset  # another stream: start at its top
        if result.recovered:
            offset = start.offset
        elif result.missed is not None:
            offset = result.missed[1]
        at = self.positions.get(room)
        if at is not None and at.epoch == result.epoch and at.offset > offset:
            offset = at.offset
        self.positions[room] = Position(offset, result.epoch)
        if result.offset > offset:
            self.replay_until[room] = result.offset
        return Recovery(room, bool(result.recovered), result.epoch, result.offset, start,
                        result.missed)

    def on_reset(self, room: str, epoch: str, offset: int,
                 missed: tuple[int, int] | None) -> Reset | None:
        """A `reset` frame: the room's position moves to `offset` of stream `epoch` (in the
        same epoch it never moves back: what was delivered stays delivered), replays end,
        and the Reset tells the app to reload. None for a room the client does not keep."""
        if room not in self.subs:
            return None
        at = self.positions.get(room)
        last = offset
        if at is not None and at.epoch == epoch and at.offset > offset:
            last = at.offset
        self.positions[room] = Position(last, epoch)
        self.replay_until.pop(room, None)
        return Reset(room, epoch, offset, missed, at)

    def on_subscribe_error(self, command_id: Any) -> list[str] | None:
        """An `error` reply to a subscribe command: the rooms it named (None when the id is
        not a subscribe in flight)."""
        if not isinstance(command_id, int) or command_id not in self.in_flight:
            return None
        rooms, _since = self.in_flight.pop(command_id)
        return rooms
