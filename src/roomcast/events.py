"""Room and user events (protocol §13), decided without IO: time is passed in.

`Debouncer` turns cluster-wide up/down transitions of a room's subscribers or a user's
connections into events, holding back every "gone" for `events_delay` seconds so that a
brief absence produces nothing at all. Alone, it decides that itself; with a shared
backplane, the backplane numbers the transitions and decides whether an "up" is news
(`seq` given), and a "gone" is checked against it once due (`still_gone`). `Outbox` holds
the events waiting for delivery: bounded, one key's events in order, retried with
exponential backoff.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import dataclass

import msgspec

__all__ = ["GONE", "KINDS", "RETRY_TRIES", "Debouncer", "Event", "Outbox", "iso_ts",
           "retry_delay"]

# kind of key -> (event when it appears, event when it has gone)
KINDS: dict[str, tuple[str, str]] = {
    "room": ("room_occupied", "room_vacated"),
    "user": ("user_online", "user_offline"),
}
GONE = frozenset(gone for _up, gone in KINDS.values())
RETRY_TRIES = 10  # deliveries of one event before it is given up (§13)

Key = tuple[str, str]  # ("room", name) or ("user", user_id)


def iso_ts(wall: float) -> str:
    """Unix seconds as the contract's `2026-11-22T10:31:00.000Z`."""
    whole = int(wall)
    millis = round((wall - whole) * 1000)
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def retry_delay(tries: int) -> float | None:
    """Seconds to wait after `tries` failed deliveries (1 s doubling), None once given up."""
    if tries >= RETRY_TRIES:
        return None
    return float(2 ** (tries - 1))


@dataclass(frozen=True)
class Event:
    """One transition to tell the application; `seq` numbers the key's transitions, so
    the same transition has the same `id` wherever it is computed."""

    event: str
    kind: str
    name: str
    seq: int
    wall: float

    @property
    def id(self) -> str:
        return f"{self.event}:{self.name}:{self.seq}"

    @property
    def key(self) -> Key:
        return (self.kind, self.name)

    def body(self) -> bytes:
        """The exact JSON bytes POSTed (and signed)."""
        field_name = "room" if self.kind == "room" else "user_id"
        return msgspec.json.encode({"id": self.id, "event": self.event, field_name: self.name,
                                    "ts": iso_ts(self.wall)})


@dataclass
class _KeyState:
    present: bool = False  # what the application was last told
    seq: int = 0  # the number of the key's last transition
    pending: tuple[float, int, float] | None = None  # a "gone" held back: (due, seq, wall)


class Debouncer:
    """Per-key state: a "gone" waits `delay` seconds and is forgotten, with the "back"
    that cancelled it, when the key comes back meanwhile."""

    def __init__(self, delay: float, base: int = 0) -> None:
        self.delay = delay
        self.base = base  # where this process's numbering of every key starts
        self._keys: dict[Key, _KeyState] = {}
        self._due: list[tuple[float, Key]] = []  # heap; stale entries are skipped

    def up(self, kind: str, name: str, now: float, wall: float, seq: int | None = None,
           confirmed: int | None = None, confirmed_wall: float | None = None) -> list[Event]:
        """The key went from none to some: the events to send (none when a brief absence
        ended, or the application already knows it is there).

        With `seq`, the backplane has decided this "up" is news, and `confirmed` names the
        "gone" (at `confirmed_wall`) it found long enough and left to this node: it goes
        first."""
        key = (kind, name)
        if seq is not None:
            self._keys.pop(key, None)  # the backplane remembers; a held gone is void now
            out = []
            if confirmed is not None:
                gone_wall = confirmed_wall if confirmed_wall is not None else wall
                out.append(Event(KINDS[kind][1], kind, name, confirmed, gone_wall))
            return [*out, Event(KINDS[kind][0], kind, name, seq, wall)]
        state = self._state(key, wall)
        state.seq += 1
        if state.pending is not None:
            state.pending = None
            return []
        if state.present:
            return []
        state.present = True
        return [Event(KINDS[kind][0], kind, name, state.seq, wall)]

    def down(self, kind: str, name: str, now: float, wall: float,
             seq: int | None = None) -> None:
        """The key went from some to none: its "gone" is due at now + delay. With `seq`
        (a shared backplane) it is held whatever this node knew of the key."""
        key = (kind, name)
        if seq is None and key not in self._keys:
            return  # never reported up here: nothing to tell
        state = self._state(key, wall)
        state.seq = seq if seq is not None else state.seq + 1
        if seq is None and (not state.present or state.pending is not None):
            return
        state.pending = (now + self.delay, state.seq, wall)
        heapq.heappush(self._due, (now + self.delay, key))

    def _state(self, key: Key, wall: float) -> _KeyState:
        """The key's state; a key not known (or forgotten once gone) is numbered from
        `base` or the time in ms, whichever is later, so its ids never repeat earlier ones
        (unless it made more than one transition per ms meanwhile)."""
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState(seq=max(self.base, int(wall * 1000)))
        return state

    def due(self, now: float) -> list[Event]:
        """The "gone" events whose delay has passed by `now`, in the order they fell due."""
        out: list[Event] = []
        while self._due and self._due[0][0] <= now:
            at, key = heapq.heappop(self._due)
            state = self._keys.get(key)
            if state is None or state.pending is None or state.pending[0] != at:
                continue
            _at, seq, wall = state.pending
            del self._keys[key]  # told: forgotten (see _state for its next numbering)
            out.append(Event(KINDS[key[0]][1], key[0], key[1], seq, wall))
        return out

    def pending(self, kind: str, name: str) -> int | None:
        """The transition number of the key's held-back "gone", if any."""
        state = self._keys.get((kind, name))
        return state.pending[1] if state is not None and state.pending is not None else None

    def next_deadline(self) -> float | None:
        """When `due` next has something to return (perhaps a stale entry: call anyway)."""
        return self._due[0][0] if self._due else None


@dataclass
class _Waiting:
    event: Event
    tries: int = 0


class Outbox:
    """Events waiting for delivery: at most `limit`; per key, in order, one at a time.

    Each key with events is in exactly one place: ready (its oldest may go now), in
    flight, or backing off (a heap by when it may go again), so no call scans them all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped = 0
        self.given_up = 0
        self._queues: dict[Key, deque[_Waiting]] = {}
        self._ready: deque[Key] = deque()
        self._backoff: list[tuple[float, Key]] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, event: Event) -> bool:
        """Queue an event; False (and counted in `dropped`) when the outbox is full."""
        if self._size >= self.limit:
            self.dropped += 1
            return False
        queue = self._queues.get(event.key)
        if queue is None:
            queue = self._queues[event.key] = deque()
            self._ready.append(event.key)
        queue.append(_Waiting(event))
        self._size += 1
        return True

    def take(self, now: float) -> list[Event]:
        """Every event that may be sent now: each key's oldest, if none of that key is in
        flight and its backoff has passed. They are in flight until `done`/`failed`."""
        while self._backoff and self._backoff[0][0] <= now:
            self._ready.append(heapq.heappop(self._backoff)[1])
        out = [self._queues[key][0].event for key in self._ready]
        self._ready.clear()
        return out

    def done(self, event: Event) -> None:
        """Delivered: the key's next event may go."""
        self._finish(event.key)

    def failed(self, event: Event, now: float) -> float | None:
        """Not delivered: when to try again, or None when it has had its 10 tries."""
        key = event.key
        waiting = self._queues[key][0]
        waiting.tries += 1
        delay = retry_delay(waiting.tries)
        if delay is None:
            self.given_up += 1
            self._finish(key)
            return None
        heapq.heappush(self._backoff, (now + delay, key))
        return now + delay

    def _finish(self, key: Key) -> None:
        queue = self._queues[key]
        queue.popleft()
        self._size -= 1
        if queue:
            self._ready.append(key)
        else:
            del self._queues[key]

    def next_wake(self) -> float | None:
        """The earliest backoff that ends (None: none waits)."""
        return self._backoff[0][0] if self._backoff else None
