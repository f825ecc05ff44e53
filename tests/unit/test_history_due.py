"""An append prunes only when something may have expired, and still prunes then."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.history import RoomLog


def held(log: RoomLog) -> int:
    return len(log._ring) + len(log._keys)


def test_an_append_after_the_ttl_drops_what_expired() -> None:
    log = RoomLog(100, 10.0, "e-1", 0.0, idempotency_window=5.0)
    for i in range(5):
        log.append(float(i), lambda offset: b"m", f"k{i}")
    assert held(log) == 10
    log.append(12.0, lambda offset: b"m")  # entries 0..2 are over 10 s old, every key over 5
    assert [e.offset for e in log._ring] == [4, 5, 6]
    assert not log._keys


@settings(max_examples=200)
@given(st.lists(st.tuples(st.floats(0, 3), st.booleans()), max_size=40),
       st.floats(0.5, 5), st.floats(0.5, 5))
def test_what_an_append_keeps_equals_pruning_on_every_append(
        steps: list[tuple[float, bool]], ttl: float, window: float) -> None:
    lazy = RoomLog(8, ttl, "e-1", 0.0, window, 4)
    eager = RoomLog(8, ttl, "e-1", 0.0, window, 4)
    now = 0.0
    for i, (gap, keyed) in enumerate(steps):
        now += gap
        key = f"k{i % 6}" if keyed else None
        eager.prune(now)
        a = lazy.append(now, lambda offset: b"m", key)
        b = eager.append(now, lambda offset: b"m", key)
        assert (a.offset, a.duplicate) == (b.offset, b.duplicate)
    lazy.prune(now)  # what a reader sees: the same entries and keys
    eager.prune(now)
    assert list(lazy._ring) == list(eager._ring)
    assert list(lazy._keys) == list(eager._keys)
