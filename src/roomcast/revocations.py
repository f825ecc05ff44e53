"""Revoked token ids (protocol §8), bounded in time and in count. Pure: time passed in."""

from __future__ import annotations

import heapq
import math


class RevocationList:
    """jti -> the time after which the entry can be forgotten. Bounded: entries expire; an
    entry without expires_at is kept for `default_keep` seconds (default 86400); at most
    `max_entries` (default 100_000) — the ones expiring soonest are dropped first when full.

    A jti stays revoked while now <= its forget time. Revoking a jti again only ever extends
    its forget time, so a later call can never shorten a revocation."""

    def __init__(self, default_keep: float = 86400.0, max_entries: int = 100_000) -> None:
        if not (math.isfinite(default_keep) and default_keep > 0):
            raise ValueError(f"default_keep must be a positive number, got {default_keep!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries!r}")
        self.default_keep = default_keep
        self.max_entries = max_entries
        self._forget_at: dict[str, float] = {}
        # (forget_at, jti); entries whose time no longer matches _forget_at are stale.
        self._heap: list[tuple[float, str]] = []

    def revoke(self, jti: str, now: float, expires_at: float | None = None) -> None:
        """Revoke `jti` until `expires_at` (normally the token's `exp`), or for default_keep
        seconds from `now` when the expiry is unknown."""
        if expires_at is not None and not math.isfinite(expires_at):
            raise ValueError(f"expires_at must be a finite number, got {expires_at!r}")
        forget_at = now + self.default_keep if expires_at is None else float(expires_at)
        old = self._forget_at.get(jti)
        if old is not None and old >= forget_at:
            return
        self._forget_at[jti] = forget_at
        heapq.heappush(self._heap, (forget_at, jti))
        while len(self._forget_at) > self.max_entries:
            self._pop_soonest()
        if len(self._heap) > 2 * len(self._forget_at) + 64:
            self._heap = [(t, j) for j, t in self._forget_at.items()]
            heapq.heapify(self._heap)

    def is_revoked(self, jti: str, now: float) -> bool:
        """Whether `jti` is revoked at time `now`."""
        forget_at = self._forget_at.get(jti)
        return forget_at is not None and now <= forget_at

    def prune(self, now: float) -> int:
        """Drop the entries whose forget time has passed; return how many were dropped."""
        dropped = 0
        while self._heap and self._heap[0][0] < now:
            forget_at, jti = heapq.heappop(self._heap)
            if self._forget_at.get(jti) == forget_at:
                del self._forget_at[jti]
                dropped += 1
        return dropped

    def __len__(self) -> int:
        return len(self._forget_at)

    def __contains__(self, jti: object) -> bool:
        return jti in self._forget_at

    def _pop_soonest(self) -> None:
        while self._heap:
            forget_at, jti = heapq.heappop(self._heap)
            if self._forget_at.get(jti) == forget_at:
                del self._forget_at[jti]
                return


