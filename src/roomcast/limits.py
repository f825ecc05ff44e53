"""Per-connection limits (protocol §6): a token bucket, an abuse meter, a time limit on an
unfinished message; and the node-wide budget for bytes held in unfinished messages.

Pure: no IO, and time is always passed in as `now` (seconds). The two allocator calls at
the end (fix_mmap_threshold, trim_heap) are the exception: they ask glibc to give memory
that the budget bounded back to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class TokenBucket:
    """Per-connection command rate: `rate` tokens a second, at most `burst` stored; starts full."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float) -> bool:
        """Spend one token if one is available; True if it was."""
        if now > self._last:  # a clock that goes back mints nothing
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class AbuseMeter:
    """Counts rejected commands in a sliding window; `exceeded` once more than `limit` fall within
    `window` seconds."""

    __slots__ = ("_limit", "_times", "_window")

    def __init__(self, limit: int, window: float = 10.0) -> None:
        self._limit = limit
        self._window = window
        # Only the newest limit+1 rejections can decide the answer, so only they are kept;
        # made on the first rejection, as most connections never have one.
        self._times: deque[float] | None = None

    def record(self, now: float) -> bool:
        """Record one rejection; True when more than `limit` fell within the last `window` s."""
        times = self._times
        if times is None:
            times = self._times = deque(maxlen=self._limit + 1)
        times.append(now)
        return len(times) > self._limit and now - times[0] < self._window


class MessageClock:
    """When the unfinished message in progress began, so that it can be given at most
    `limit` seconds to finish (a peer that trickles one message forever holds its memory
    forever). Fed what a FrameReader says after each feed: `in_message` and `messages`."""

    __slots__ = ("_limit", "_messages", "started")

    def __init__(self, limit: float) -> None:
        self._limit = limit
        self._messages = 0
        self.started: float | None = None  # when the message in progress began, else None

    def update(self, in_message: bool, messages: int, now: float) -> float:
        """After a feed: the time by which the message in progress must be complete
        (math.inf when none is). A message counts from the feed that brought its first
        bytes: when `messages` moved, the one in progress is a new one."""
        if not in_message:
            self.started = None
            self._messages = messages
            return math.inf
        if self.started is None or messages != self._messages:
            self.started = now
            self._messages = messages
        return self.started + self._limit

    def expired(self, now: float) -> bool:
        """Whether the message in progress has had its `limit` seconds and is not done."""
        return self.started is not None and now - self.started >= self._limit


class HeldBytesBudget(Generic[K]):
    """A node-wide bound on the bytes held in unfinished messages. Each connection (`key`)
    reports what it holds after each feed; once the total is over `limit`, `over()` names
    the one holding the most, to be closed (1013: at capacity, come back with backoff).

    update() is O(1); only connections that hold something are kept, and over() looks for
    the largest among them only when the total is over the limit.
    """

    __slots__ = ("_held", "_limit", "_total", "released")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held: dict[K, int] = {}
        self._total = 0
        self.released = 0  # bytes let go (a message completed, a connection left) since reset

    @property
    def total(self) -> int:
        """Bytes held by every connection together."""
        return self._total

    @property
    def limit(self) -> int:
        return self._limit

    def held(self, key: K) -> int:
        """What `key` holds, as last reported."""
        return self._held.get(key, 0)

    def __len__(self) -> int:
        """How many connections hold something."""
        return len(self._held)

    def update(self, key: K, held: int) -> bool:
        """Record that `key` now holds `held` bytes (0: nothing; it is then forgotten).
        True when the node-wide total is over the limit (then call over())."""
        if held:
            old = self._held.get(key, 0)
            self._held[key] = held
        else:
            old = self._held.pop(key, 0)
        self._total += held - old
        if held < old:
            self.released += old - held
        return self._total > self._limit

    def forget(self, key: K) -> None:
        """`key` holds nothing any more (its connection is closing or gone)."""
        self.update(key, 0)

    def over(self) -> K | None:
        """The key holding the most while the total is over the limit, else None. The
        caller closes that connection and forget()s it, and asks again: one close may not
        be enough."""
        if self._total <= self._limit or not self._held:
            return None
        held = self._held
        return max(held, key=held.__getitem__)

    def take_released(self) -> int:
        """Bytes released since the last call (and start counting again): how much a
        trim_heap() could give back."""
        released, self.released = self.released, 0
        return released


# --- the allocator -----------------------------------------------------------------------

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
_libc: ctypes.CDLL | None = None


def _glibc() -> ctypes.CDLL | None:
    """glibc, when this process runs on it (None elsewhere: musl, macOS)."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name or "libc.so.6")
        except OSError:
            return None
        if not (hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt")):  # only glibc
            return None
        _libc = libc
    return _libc


def fix_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """Have glibc serve every allocation of `nbytes` or more with its own mmap, so that a
    big buffer (an unfinished message) goes back to the system the moment it is freed.
    By default glibc raises this threshold after the first such free, and later big
    buffers then stay in the heap after they are freed. Call once at start; False when
    the C library is not glibc (then nothing changed)."""
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, nbytes) == 1)


def trim_heap() -> bool:
    """Give the heap's free pages back to the system (glibc's malloc_trim(0); ~10 ms with
    a few hundred MB free). True when something was released; False, too, off glibc."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))
