"""Unit tests for roomcast.limits: the token bucket and the abuse meter."""

from __future__ import annotations

from roomcast.limits import AbuseMeter, TokenBucket


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
