"""Time-outs for many HTTP connections without a cancel scope per read.

A keep-alive connection waits for bytes once per request; entering and leaving a cancel
scope each time costs more than parsing the request. Instead each connection files its
deadline in a bucket of TICK seconds, and one task per listener wakes every TICK and
cancels the connections whose deadline has passed while they wait for bytes. A
connection busy answering is never cancelled: it checks its own deadline before it
waits again. A time-out so fires between its deadline and TICK later.
"""

from __future__ import annotations

import math
from typing import Final

import trio

TICK: Final = 0.1  # seconds between checks


class Watch:
    """One connection's deadline, and the cancel scope around its reads."""

    __slots__ = ("deadline", "scope", "slot", "waiting")

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.deadline = float("inf")
        self.slot: int | None = None
        self.waiting = False  # parked waiting for bytes: the only time it may be cancelled

    def expired(self) -> bool:
        return trio.current_time() >= self.deadline


class Deadlines:
    """The deadlines of one listener's connections, bucketed by TICK."""

    def __init__(self) -> None:
        self.buckets: dict[int, set[Watch]] = {}

    def set(self, watch: Watch, deadline: float) -> None:
        """Give `watch` a new deadline (moving it between buckets only when it changes
        bucket: a busy connection's deadline moves a little on every request)."""
        watch.deadline = deadline
        slot = math.ceil(deadline / TICK) if deadline < math.inf else -1
        if slot != watch.slot:
            self.drop(watch)
            self.buckets.setdefault(slot, set()).add(watch)
            watch.slot = slot

    def drop(self, watch: Watch) -> None:
        if watch.slot is not None:
            bucket = self.buckets.get(watch.slot)
            if bucket is not None:
                bucket.discard(watch)
                if not bucket:
                    del self.buckets[watch.slot]
            watch.slot = None

    def sweep(self, now: float) -> None:
        """Cancel the waiting connections whose deadline has passed by `now`."""
        due = math.floor(now / TICK)
        for slot in [slot for slot in self.buckets if 0 <= slot <= due]:
            for watch in self.buckets.pop(slot):
                watch.slot = None
                if watch.waiting and watch.deadline <= now:
                    watch.scope.cancel()
                elif watch.deadline > now:
                    self.set(watch, watch.deadline)

    async def run(self) -> None:
        """Sweep every TICK until cancelled."""
        while True:
            await trio.sleep(TICK)
            self.sweep(trio.current_time())
