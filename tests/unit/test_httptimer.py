"""roomcast.httptimer: a deadline cancels its connection only once passed and only while
it waits for bytes; moving a deadline keeps one entry per connection."""

from __future__ import annotations

import trio

from roomcast.httptimer import TICK, Deadlines, Watch


def watch_at(deadlines: Deadlines, deadline: float, waiting: bool = True) -> Watch:
    watch = Watch(trio.CancelScope())
    watch.waiting = waiting
    deadlines.set(watch, deadline)
    return watch


def entries(deadlines: Deadlines) -> int:
    return sum(len(bucket) for bucket in deadlines.buckets.values())


async def test_a_waiting_connection_is_cancelled_once_its_deadline_has_passed() -> None:
    deadlines = Deadlines()
    watch = watch_at(deadlines, 10.0)
    deadlines.sweep(9.99)
    assert not watch.scope.cancel_called
    deadlines.sweep(10.0 + TICK)
    assert watch.scope.cancel_called
    assert entries(deadlines) == 0


async def test_a_busy_connection_is_left_to_check_its_own_deadline() -> None:
    deadlines = Deadlines()
    watch = watch_at(deadlines, 10.0, waiting=False)
    deadlines.sweep(10.0 + 2 * TICK)
    assert not watch.scope.cancel_called
    assert entries(deadlines) == 0  # no longer filed: it checks before it waits again


async def test_a_moved_deadline_is_filed_once_and_honoured() -> None:
    deadlines = Deadlines()
    watch = watch_at(deadlines, 10.0)
    for step in range(1, 100):
        deadlines.set(watch, 10.0 + step * 0.013)
    assert entries(deadlines) == 1
    deadlines.sweep(10.5)
    assert not watch.scope.cancel_called  # its deadline is 11.287 now
    deadlines.sweep(11.287 + TICK)
    assert watch.scope.cancel_called


async def test_dropping_forgets_the_connection() -> None:
    deadlines = Deadlines()
    watch = watch_at(deadlines, 10.0)
    deadlines.drop(watch)
    deadlines.drop(watch)
    assert deadlines.buckets == {}
    deadlines.sweep(100.0)
    assert not watch.scope.cancel_called


async def test_the_sweeper_cancels_a_real_wait_within_a_tick() -> None:
    deadlines = Deadlines()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(deadlines.run)
        with trio.CancelScope() as scope:
            watch = Watch(scope)
            watch.waiting = True
            started = trio.current_time()
            deadlines.set(watch, started + 0.2)
            await trio.sleep_forever()
        assert scope.cancelled_caught
        assert 0.2 <= trio.current_time() - started < 0.2 + 3 * TICK + 1
        nursery.cancel_scope.cancel()
