"""roomcast.log.LogThrottle and throttled_event: one line per reason per interval, the next
one carrying how many were held back; checked by hand, against a model (hypothesis), and
through the real logger and formatter."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.log import LogThrottle, TextFormatter, logger, throttled_event


def test_first_line_per_key_passes_with_nothing_held_back() -> None:
    throttle: LogThrottle[str] = LogThrottle(interval=10.0)
    assert throttle.admit("bad_token", 0.0) == 0
    assert throttle.admit("origin", 0.5) == 0


def test_repeats_within_the_interval_are_held_back_and_counted() -> None:
    throttle: LogThrottle[str] = LogThrottle(interval=10.0)
    throttle.admit("bad_token", 0.0)
    assert [throttle.admit("bad_token", t / 10) for t in range(1, 100)] == [None] * 99
    assert throttle.admit("bad_token", 10.0) == 99
    assert throttle.admit("bad_token", 10.1) is None
    assert throttle.admit("bad_token", 25.0) == 1


def test_keys_are_throttled_separately() -> None:
    throttle: LogThrottle[str] = LogThrottle(interval=10.0)
    throttle.admit("a", 0.0)
    assert throttle.admit("a", 1.0) is None
    assert throttle.admit("b", 1.0) == 0


def test_due_reports_held_back_lines_of_a_flood_that_stopped() -> None:
    throttle: LogThrottle[str] = LogThrottle(interval=10.0)
    throttle.admit("a", 0.0)
    throttle.admit("a", 1.0)
    throttle.admit("a", 2.0)
    throttle.admit("b", 0.0)
    assert throttle.due(5.0) == []  # not yet: the interval has not passed
    assert throttle.due(10.0) == [("a", 2)]
    assert len(throttle) == 1  # b was quiet for an interval: forgotten
    assert throttle.admit("a", 11.0) is None  # due() counted as a line written at 10.0
    assert throttle.due(30.0) == [("a", 1)]
    assert throttle.due(50.0) == [] and len(throttle) == 0


def test_keys_beyond_max_keys_push_out_the_oldest() -> None:
    throttle: LogThrottle[int] = LogThrottle(interval=10.0, max_keys=3)
    for key in range(5):
        throttle.admit(key, 0.0)
    assert len(throttle) == 3
    assert throttle.admit(0, 1.0) == 0  # forgotten, so it passes again
    assert throttle.admit(4, 1.0) is None


def test_a_clock_that_goes_back_lets_nothing_more_through() -> None:
    throttle: LogThrottle[str] = LogThrottle(interval=10.0)
    throttle.admit("a", 100.0)
    assert throttle.admit("a", 50.0) is None
    assert throttle.admit("a", 110.0) == 1


events = st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 5)), max_size=200)


@given(st.floats(0.1, 20), events)
def test_every_event_is_a_line_or_counted_in_one(interval: float,
                                                 steps: list[tuple[str, float]]) -> None:
    """Lines for a key are at least `interval` apart, and lines plus their counts (plus what
    a final due() reports) account for every event."""
    throttle: LogThrottle[str] = LogThrottle(interval=interval)
    now = 0.0
    written: dict[str, list[float]] = {}
    accounted = 0
    for key, step in steps:
        now += step
        held_back = throttle.admit(key, now)
        if held_back is not None:
            written.setdefault(key, []).append(now)
            accounted += 1 + held_back
    accounted += sum(n for _, n in throttle.due(now + 2 * interval))  # 2: float rounding
    assert accounted == len(steps)
    for times in written.values():
        assert all(b - a >= interval for a, b in pairwise(times))


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """roomcast's logger writing text lines into a buffer, at info."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    saved = logger.handlers[:], logger.level, logger.propagate
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield out
    finally:
        logger.handlers[:], level, logger.propagate = saved
        logger.setLevel(level)


def test_throttled_event_writes_one_line_then_one_with_count(captured: io.StringIO) -> None:
    throttle: LogThrottle[str] = LogThrottle(interval=10.0)
    written = [throttled_event(throttle, "bad_token", i / 1000, "refused", reason="bad_token")
               for i in range(5000)]
    assert written == [True] + [False] * 4999
    assert throttled_event(throttle, "bad_token", 12.0, "refused", reason="bad_token")
    lines = captured.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("info refused reason=bad_token")
    assert lines[1].endswith("info refused reason=bad_token count=4999")


def test_throttled_event_below_the_log_level_costs_no_slot(captured: io.StringIO) -> None:
    throttle: LogThrottle[str] = LogThrottle(interval=10.0)
    assert not throttled_event(throttle, "x", 0.0, "refused", logging.DEBUG)
    assert len(throttle) == 0 and captured.getvalue() == ""
