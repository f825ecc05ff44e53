"""Per-room message history in memory: offsets, epochs, recovery with `since`, idempotency.

Pure bookkeeping (protocol §4, §5): no IO, and time is always passed in as `now` (seconds).
An entry is held while it is among the newest `size` and younger than `ttl` seconds; an
idempotency key is live while younger than the window. Both expire lazily from the oldest
end, so every operation on the hot path costs amortised O(1) (plus what it returns); an
append prunes only once the oldest entry or key may have expired (a reader always prunes).
"""

from __future__ import annotations

import os
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Container
from dataclasses import dataclass
from itertools import islice
from typing import Final, NamedTuple

_NEVER: Final = float("inf")


_EPOCH_POOL = bytearray()  # random bytes drawn 4 KiB at a time (one syscall per 1024 epochs)
os.register_at_fork(after_in_child=_EPOCH_POOL.clear)  # a worker never repeats its parent's


def new_epoch() -> str:
    """A fresh random name for a room's history stream, e.g. "e-9f2c41ab" (the Redis
    backplane proposes one with every publish, for the case the room has no stream)."""
    if not _EPOCH_POOL:
        _EPOCH_POOL.extend(secrets.token_bytes(4096))
    name = "e-" + _EPOCH_POOL[-4:].hex()
    del _EPOCH_POOL[-4:]
    return name


class Entry(NamedTuple):
    """One published message as kept in history (a NamedTuple: made on every publish, and
    four times cheaper to make than a frozen dataclass)."""

    offset: int
    time: float  # when appended (the `now` passed in)
    payload: bytes  # the encoded JSON message frame, opaque here


@dataclass(frozen=True, slots=True)
class Recovery:
    """The answer to a subscribe with `since`: what to replay, and what was lost."""

    recovered: bool
    messages: list[Entry]  # held messages to send after `since`, oldest first
    missed: tuple[int, int] | None  # inclusive offsets known lost, or None


class PublishOutcome(NamedTuple):
    """The result of one publish: its offset, and whether it repeated an idempotency key
    (a NamedTuple, as Entry)."""

    offset: int
    epoch: str
    duplicate: bool
    entry: Entry | None  # None when duplicate (nothing new to deliver)


class RoomLog:
    """One room's stream: epoch, last offset, bounded ring of recent entries, idempotency keys."""

    __slots__ = (
        "_due",
        "_keys",
        "_last_append",
        "_max_keys",
        "_ring",
        "_ttl",
        "_window",
        "epoch",
        "offset",
    )

    def __init__(
        self,
        size: int,
        ttl: float,
        epoch: str,
        now: float,
        idempotency_window: float = 300.0,
        idempotency_max_keys: int = 10_000,
    ) -> None:
        self._ttl = ttl
        self.epoch = epoch
        self.offset = 0  # last assigned offset; the first message gets 1
        # The ring is always a contiguous run of the newest offsets: it grows on the right
        # and loses entries only on the left (by count through maxlen, by age in _expire).
        self._ring: deque[Entry] = deque(maxlen=max(size, 0) if ttl > 0 else 0)
        self._keys: OrderedDict[str, tuple[int, float]] = OrderedDict()  # key -> (offset, time)
        self._window = idempotency_window
        self._max_keys = idempotency_max_keys
        self._last_append = now
        # No entry or key expires before this time (it may be earlier than the truth, never
        # later): until then append need not prune.
        self._due = _NEVER

    def append(
        self, now: float, build: Callable[[int], bytes], idempotency_key: str | None = None
    ) -> PublishOutcome:
        """Assign the next offset and keep build(offset) in history, unless the key repeats a
        publish made within the window: then nothing changes and the first offset is returned."""
        if now >= self._due:
            self.prune(now)
        keys = self._keys
        if idempotency_key is not None:
            seen = keys.get(idempotency_key)
            if seen is not None:
                if now - seen[1] < self._window:
                    return PublishOutcome(seen[0], self.epoch, True, None)
                del keys[idempotency_key]  # expired but not yet pruned (the clock went back)
        self.offset = offset = self.offset + 1
        self._last_append = now
        entry = Entry(offset, now, build(offset))
        self._ring.append(entry)  # a no-op when size or ttl is 0 (maxlen 0)
        due = now + self._ttl if self._ring.maxlen else _NEVER
        if idempotency_key is not None:
            keys[idempotency_key] = (offset, now)
            if len(keys) > self._max_keys:
                keys.popitem(last=False)
            due = min(due, now + self._window)
        if due < self._due:  # the first thing held since the last prune (or the clock went back)
            self._due = due
        return PublishOutcome(offset, self.epoch, False, entry)

    def since(self, offset: int, epoch: str, now: float) -> Recovery:
        """What a client that has seen everything up to `offset` of `epoch` needs (§4
        subscribe): the held messages after it, and the range lost if some are gone."""
        if epoch != self.epoch or offset > self.offset or offset < 0:
            return Recovery(False, [], None)  # another stream, or a position it never had
        self.prune(now)
        if offset == self.offset:
            return Recovery(True, [], None)
        ring = self._ring
        if not ring:
            return Recovery(False, [], (offset + 1, self.offset))
        first = ring[0].offset
        if offset >= first - 1:
            return Recovery(True, self._after(offset), None)
        return Recovery(False, list(ring), (offset + 1, first - 1))

    def history(self, since: int | None, limit: int, now: float) -> list[Entry]:
        """The `history` command (§4): with `since`, the first `limit` held entries after it;
        without, the newest `limit`. Oldest first either way."""
        self.prune(now)
        ring = self._ring
        if limit <= 0 or not ring:
            return []
        if since is None:
            newest = list(islice(reversed(ring), limit))
            newest.reverse()
            return newest
        skip = min(max(since - ring[0].offset + 1, 0), len(ring))  # since may be huge
        return list(islice(ring, skip, skip + limit))

    def prune(self, now: float) -> None:
        """Drop entries older than ttl and idempotency keys older than the window."""
        ring = self._ring
        due = _NEVER
        if ring:
            cutoff = now - self._ttl
            while ring and ring[0].time <= cutoff:
                ring.popleft()
            if ring:
                due = ring[0].time + self._ttl
        keys = self._keys
        if keys:
            cutoff = now - self._window
            while keys and next(iter(keys.values()))[1] <= cutoff:
                keys.popitem(last=False)
            if keys:
                due = min(due, next(iter(keys.values()))[1] + self._window)
        self._due = due

    def idle(self, now: float) -> bool:
        """True when nothing is held, no idempotency key is live and nothing was appended for
        ttl seconds: forgetting the room then loses nothing (it gets a new epoch next time)."""
        self.prune(now)
        return not self._ring and not self._keys and now - self._last_append >= self._ttl

    def _after(self, offset: int) -> list[Entry]:
        """The held entries after `offset`, walking the ring from whichever end is nearer."""
        ring = self._ring
        skip = max(offset - ring[0].offset + 1, 0)
        keep = len(ring) - skip
        if keep <= 0:
            return []
        if keep < skip:
            tail = list(islice(reversed(ring), keep))
            tail.reverse()
            return tail
        return list(islice(ring, skip, None))


class HistoryStore:
    """Every room's RoomLog. Bounded: rooms that are idle are forgotten by prune()."""

    def __init__(
        self,
        size: int,
        ttl: float,
        idempotency_window: float = 300.0,
        idempotency_max_keys: int = 10_000,
        epoch_factory: Callable[[], str] = new_epoch,
    ) -> None:
        self._size = size
        self._ttl = ttl
        self._window = idempotency_window
        self._max_keys = idempotency_max_keys
        self._epoch_factory = epoch_factory
        self._rooms: dict[str, RoomLog] = {}

    def room(self, name: str, now: float) -> RoomLog:
        """The room's log, created (with a new epoch) if it is not known."""
        log = self._rooms.get(name)
        if log is None:
            log = self._rooms[name] = RoomLog(
                self._size, self._ttl, self._epoch_factory(), now, self._window, self._max_keys
            )
        return log

    def get(self, name: str) -> RoomLog | None:
        """The room's log if it is known, without creating it."""
        return self._rooms.get(name)

    def publish(
        self,
        name: str,
        now: float,
        build: Callable[[int], bytes],
        idempotency_key: str | None = None,
    ) -> PublishOutcome:
        """Append to the room's log (see RoomLog.append), creating the room if needed."""
        return self.room(name, now).append(now, build, idempotency_key)

    def prune(self, now: float, keep: Container[str] = ()) -> int:
        """Prune every room and forget the idle ones, except those in `keep` (rooms with
        live subscribers, whose epoch must not change under them); return how many."""
        before = len(self._rooms)
        # A new dict rather than deletions, so its memory shrinks with the number of rooms.
        self._rooms = {
            name: log for name, log in self._rooms.items() if name in keep or not log.idle(now)
        }
        return before - len(self._rooms)

    def __len__(self) -> int:
        return len(self._rooms)
