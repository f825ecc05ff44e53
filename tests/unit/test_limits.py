"""Unit tests for roomcast.limits: the token bucket, the abuse meter, the time limit on an
unfinished message (with a real FrameReader) and the node-wide held-bytes budget (against a
model, with hypothesis); and the allocator calls, measured on this process."""

from __future__ import annotations

import math
import os

from hypothesis import given
from hypothesis import strategies as st

from roomcast.limits import (
    AbuseMeter,
    HeldBytesBudget,
    MessageClock,
    TokenBucket,
    fix_mmap_threshold,
    trim_heap,
)
from roomcast.websocket import FrameReader

MASK = b"\x01\x02\x03\x04"


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame with a payload under 126 bytes."""
    head = bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload)))
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def test_token_bucket_starts_full_and_allows_a_burst() -> None:
    bucket = TokenBucket(rate=20.0, burst=40, now=0.0)
    assert all(bucket.take(0.0) for _ in range(40))
    assert not bucket.take(0.0)


def test_token_bucket_refills_at_rate() -> None:
    bucket = TokenBucket(rate=4.0, burst=10, now=0.0)
    for _ in range(10):
        bucket.take(0.0)
    assert not bucket.take(0.1)  # 0.4 of a token
    assert bucket.take(0.25)  # 1.0 token
    assert not bucket.take(0.25)
    assert bucket.take(0.75) and bucket.take(0.75)  # 2 more
    assert not bucket.take(0.75)


def test_token_bucket_never_stores_more_than_burst() -> None:
    bucket = TokenBucket(rate=100.0, burst=3, now=0.0)
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]


def test_token_bucket_clock_going_back_mints_no_tokens() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.5)
    assert bucket.take(11.0)


def test_token_bucket_sustained_rate_is_rate_per_second() -> None:
    bucket = TokenBucket(rate=20.0, burst=40, now=0.0)
    granted = sum(bucket.take(i / 1000) for i in range(10_000))  # 1000 tries/s for 10 s
    assert granted in (239, 240)  # 40 + 20 / s * 9.999 s


def test_abuse_meter_exceeded_after_more_than_limit_in_window() -> None:
    meter = AbuseMeter(limit=3, window=10.0)
    assert [meter.record(float(t)) for t in range(4)] == [False, False, False, True]


def test_abuse_meter_rejections_spread_beyond_window_never_exceed() -> None:
    meter = AbuseMeter(limit=3, window=10.0)
    assert not any(meter.record(t * 3.4) for t in range(100))  # 3 per 10.2 s


def test_abuse_meter_old_rejections_leave_the_window() -> None:
    meter = AbuseMeter(limit=2, window=10.0)
    meter.record(0.0)
    meter.record(1.0)
    assert not meter.record(10.0)  # the one at 0.0 is 10 s old: out of the window
    assert meter.record(10.5)


def test_abuse_meter_keeps_at_most_limit_plus_1_timestamps() -> None:
    meter = AbuseMeter(limit=5)
    for i in range(10_000):
        meter.record(float(i))
    assert len(meter._times) == 6


# --- MessageClock --------------------------------------------------------------------------


def after(clock: MessageClock, reader: FrameReader, data: bytes, now: float) -> float:
    """Feed the reader, then the clock, as the connection does; the deadline."""
    reader.feed(data)
    return clock.update(reader.in_message, reader.messages, now)


def test_message_clock_has_no_deadline_between_messages() -> None:
    clock, reader = MessageClock(5.0), FrameReader(1 << 20)
    assert after(clock, reader, frame(1, b"whole"), 1.0) == math.inf
    assert clock.started is None and not clock.expired(100.0)


def test_message_clock_counts_from_the_first_bytes_of_a_message() -> None:
    clock, reader = MessageClock(5.0), FrameReader(1 << 20)
    assert after(clock, reader, frame(1, b"a", fin=False), 10.0) == 15.0
    assert after(clock, reader, frame(0, b"b", fin=False), 12.0) == 15.0  # still that one
    assert not clock.expired(14.9)
    assert clock.expired(15.0)
    assert after(clock, reader, frame(0, b"c"), 14.0) == math.inf
    assert not clock.expired(20.0)


def test_message_clock_interleaved_pings_do_not_restart_it() -> None:
    clock, reader = MessageClock(5.0), FrameReader(1 << 20)
    after(clock, reader, frame(1, b"a", fin=False), 0.0)
    for t in range(1, 5):  # a peer that trickles pings inside the message gains nothing
        assert after(clock, reader, frame(9, b"p"), float(t)) == 5.0
    assert clock.expired(5.0)


def test_message_clock_restarts_for_the_next_message_in_the_same_feed() -> None:
    clock, reader = MessageClock(5.0), FrameReader(1 << 20)
    after(clock, reader, frame(1, b"a", fin=False), 0.0)
    # The first message ends and the next begins in one read: the next one counts from now.
    assert after(clock, reader, frame(0, b"b") + frame(1, b"c", fin=False), 4.0) == 9.0


def test_message_clock_a_partial_frame_counts_too() -> None:
    clock, reader = MessageClock(2.0), FrameReader(1 << 20)
    assert after(clock, reader, frame(1, b"hello")[:4], 1.0) == 3.0
    assert after(clock, reader, frame(1, b"hello")[4:], 2.0) == math.inf


# --- HeldBytesBudget -----------------------------------------------------------------------


def test_budget_under_the_limit_names_nobody() -> None:
    budget: HeldBytesBudget[str] = HeldBytesBudget(100)
    assert not budget.update("a", 60)
    assert not budget.update("b", 40)
    assert (budget.total, budget.over(), len(budget)) == (100, None, 2)


def test_budget_over_the_limit_names_the_biggest_holder() -> None:
    budget: HeldBytesBudget[str] = HeldBytesBudget(100)
    budget.update("a", 30)
    budget.update("b", 50)
    assert budget.update("c", 40)
    assert budget.over() == "b"
    budget.forget("b")
    assert (budget.total, budget.over()) == (70, None)


def test_budget_a_holder_that_finishes_is_forgotten_and_counted_as_released() -> None:
    budget: HeldBytesBudget[str] = HeldBytesBudget(100)
    budget.update("a", 30)
    budget.update("a", 50)
    budget.update("a", 0)
    assert (budget.total, len(budget), budget.held("a")) == (0, 0, 0)
    assert budget.take_released() == 50
    assert budget.take_released() == 0


def test_budget_with_a_real_reader() -> None:
    budget: HeldBytesBudget[int] = HeldBytesBudget(150)
    readers = [FrameReader(1 << 20) for _ in range(3)]
    for key, size in enumerate((40, 100, 20)):
        readers[key].feed(frame(1, b"x" * size, fin=False))
        budget.update(key, readers[key].held)
    assert budget.over() == 1
    readers[1].close()
    budget.forget(1)
    assert (budget.over(), budget.total) == (None, 60)


updates = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 1000)), max_size=60)


@given(st.integers(0, 3000), updates)
def test_budget_agrees_with_a_model(limit: int, steps: list[tuple[int, int]]) -> None:
    budget: HeldBytesBudget[int] = HeldBytesBudget(limit)
    model: dict[int, int] = {}
    released = 0
    for key, held in steps:
        released += max(0, model.get(key, 0) - held)
        model[key] = held
        total = sum(model.values())
        assert budget.update(key, held) == (total > limit)
        assert budget.total == total
        assert len(budget) == sum(1 for v in model.values() if v)
        victim = budget.over()
        if total > limit:
            assert victim is not None and model[victim] == max(model.values())
        else:
            assert victim is None
    assert budget.take_released() == released


@given(st.integers(0, 2000), updates)
def test_budget_closing_the_biggest_until_none_ends_under_the_limit(
    limit: int, steps: list[tuple[int, int]],
) -> None:
    budget: HeldBytesBudget[int] = HeldBytesBudget(limit)
    for key, held in steps:
        budget.update(key, held)
    closed = 0
    while (victim := budget.over()) is not None:
        budget.forget(victim)
        closed += 1
        assert closed <= 8
    assert budget.total <= limit


# --- the allocator -------------------------------------------------------------------------


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_trim_heap_gives_freed_heap_back() -> None:
    # Many mid-sized blocks from the heap (below the mmap threshold), then freed.
    blocks = [bytearray(64 * 1024) for _ in range(800)]  # ~50 MB
    for block in blocks:
        block[::4096] = b"x" * len(block[::4096])  # touch every page
    keep = blocks[-1]  # the heap's top stays in use: only a trim can return what is below it
    del blocks
    before = rss()
    assert trim_heap()
    assert before - rss() > 20 * 1024 * 1024
    del keep


def test_fix_mmap_threshold_is_accepted_by_glibc() -> None:
    assert fix_mmap_threshold(128 * 1024)  # glibc's own starting value: nothing else moves
