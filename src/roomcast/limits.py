"""Per-connection command limits (protocol §6): a token bucket and an abuse meter.

Pure: no IO, and time is always passed in as `now` (seconds).
"""

from __future__ import annotations

from collections import deque


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
