"""Unit tests for roomcast.history: offsets, epochs, bounds, recovery, history, idempotency."""

from __future__ import annotations

import itertools
import os
import tracemalloc
from collections.abc import Callable

import pytest

from roomcast import history
from roomcast.history import Entry, HistoryStore, Recovery, RoomLog, new_epoch


def payload(offset: int) -> bytes:
    return b'{"offset": %d}' % offset


def counting_epochs() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"e-{next(counter)}"


def log_with(n: int, size: int = 100, ttl: float = 300.0, step: float = 1.0) -> RoomLog:
    """A room with n messages published one every `step` seconds from t=0 (the last at n-1)."""
    log = RoomLog(size, ttl, "e-1", now=0.0)
    for i in range(n):
        log.append(i * step, payload)
    return log


def offsets(entries: list[Entry]) -> list[int]:
    return [e.offset for e in entries]


def test_new_epoch_is_e_dash_8_hex() -> None:
    epoch = new_epoch()
    assert epoch.startswith("e-") and len(epoch) == 10
    int(epoch[2:], 16)
    assert new_epoch() != epoch


def test_offsets_start_at_1_and_go_up_by_1() -> None:
    log = RoomLog(100, 300.0, "e-1", now=0.0)
    assert log.offset == 0
    outcomes = [log.append(float(i), payload) for i in range(5)]
    assert [o.offset for o in outcomes] == [1, 2, 3, 4, 5]
    assert log.offset == 5


def test_append_builds_payload_for_its_own_offset() -> None:
    log = RoomLog(100, 300.0, "e-1", now=0.0)
    log.append(0.0, payload)
    outcome = log.append(1.0, payload)
    assert outcome.entry == Entry(2, 1.0, b'{"offset": 2}')
    assert outcome.epoch == "e-1" and not outcome.duplicate


def test_epoch_is_stable_while_the_room_is_known() -> None:
    store = HistoryStore(100, 300.0, epoch_factory=counting_epochs())
    first = store.publish("r", 0.0, payload)
    second = store.publish("r", 1.0, payload)
    assert first.epoch == second.epoch == "e-1"
    assert store.prune(100.0) == 0
    assert store.publish("r", 101.0, payload).epoch == "e-1"


def test_epochs_do_not_repeat_across_the_pool_or_a_fork(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Epochs come from a pool of random bytes: no byte of it is used twice across refills,
    and a forked worker draws its own (not the ones its parent holds next). The random
    source is replaced by one that never repeats a 4-byte word in a process (and marks
    each word with the process), so any repeat here is the pool's, not chance's."""
    words = itertools.count()

    def token_bytes(n: int) -> bytes:
        return b"".join((((os.getpid() & 0xFFFF) << 16) | next(words)).to_bytes(4, "big")
                        for _ in range(n // 4))

    monkeypatch.setattr(history.secrets, "token_bytes", token_bytes)
    history._EPOCH_POOL.clear()
    new_epoch()  # the parent's pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next epochs, then leave without cleanup
        os.write(write, " ".join(new_epoch() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = set(pipe.read().decode().split())
    os.waitpid(pid, 0)
    parent = [new_epoch() for _ in range(3000)]  # across two refills
    assert len(set(parent)) == 3000 and len(child) == 50
    assert not child & set(parent)


def test_room_gets_new_epoch_and_offsets_restart_after_it_is_forgotten() -> None:
    store = HistoryStore(100, 10.0, idempotency_window=5.0, epoch_factory=counting_epochs())
    store.publish("r", 0.0, payload)
    assert store.prune(10.0) == 1
    assert store.get("r") is None
    outcome = store.publish("r", 11.0, payload)
    assert (outcome.epoch, outcome.offset) == ("e-2", 1)


def test_size_bounds_the_entries_held() -> None:
    log = log_with(10, size=3)
    assert offsets(log.history(None, 100, now=9.0)) == [8, 9, 10]


def test_ttl_drops_entries_older_than_ttl() -> None:
    log = log_with(10, ttl=3.0)  # offset n appended at t=n-1; held while younger than 3 s
    assert offsets(log.history(None, 100, now=9.0)) == [8, 9, 10]
    assert offsets(log.history(None, 100, now=11.5)) == [10]
    assert log.history(None, 100, now=12.0) == []


def test_ttl_0_keeps_no_history_but_offsets_advance() -> None:
    log = log_with(3, ttl=0.0)
    assert log.offset == 3
    assert log.history(None, 100, now=2.0) == []


def test_size_0_keeps_no_history_but_offsets_advance() -> None:
    log = log_with(3, size=0)
    assert log.offset == 3
    assert log.history(None, 100, now=2.0) == []
    assert log.since(1, "e-1", now=2.0) == Recovery(False, [], (2, 3))


def test_since_recovers_every_message_after_offset() -> None:
    log = log_with(10, size=5)  # holds 6..10
    recovery = log.since(7, "e-1", now=9.0)
    assert recovery.recovered and recovery.missed is None
    assert offsets(recovery.messages) == [8, 9, 10]


def test_since_just_before_oldest_held_is_recovered() -> None:
    log = log_with(10, size=5)  # holds 6..10
    recovery = log.since(5, "e-1", now=9.0)
    assert recovery.recovered and offsets(recovery.messages) == [6, 7, 8, 9, 10]


def test_since_reports_missed_range_and_sends_what_is_held() -> None:
    log = log_with(10, size=5)  # holds 6..10, 1..5 lost
    recovery = log.since(2, "e-1", now=9.0)
    assert not recovery.recovered
    assert recovery.missed == (3, 5)
    assert offsets(recovery.messages) == [6, 7, 8, 9, 10]


def test_since_reports_everything_missed_when_all_expired() -> None:
    log = log_with(10, ttl=5.0)
    assert log.since(4, "e-1", now=100.0) == Recovery(False, [], (5, 10))


def test_since_with_other_epoch_is_not_recovered() -> None:
    log = log_with(10)
    assert log.since(8, "e-other", now=9.0) == Recovery(False, [], None)


def test_since_future_offset_is_not_recovered() -> None:
    log = log_with(10)
    assert log.since(11, "e-1", now=9.0) == Recovery(False, [], None)


def test_since_negative_offset_is_not_recovered() -> None:
    log = log_with(10)
    assert log.since(-1, "e-1", now=9.0) == Recovery(False, [], None)


def test_since_exactly_at_top_is_recovered_with_nothing_to_send() -> None:
    log = log_with(10, size=2)
    assert log.since(10, "e-1", now=9.0) == Recovery(True, [], None)
    # ... even when nothing is held any more
    assert log.since(10, "e-1", now=1000.0) == Recovery(True, [], None)


def test_since_0_on_empty_room_is_recovered() -> None:
    log = RoomLog(100, 300.0, "e-1", now=0.0)
    assert log.since(0, "e-1", now=1.0) == Recovery(True, [], None)


def test_since_0_with_full_history_recovers_everything() -> None:
    log = log_with(4)
    recovery = log.since(0, "e-1", now=3.0)
    assert recovery.recovered and offsets(recovery.messages) == [1, 2, 3, 4]


def test_history_without_since_returns_newest_limit_oldest_first() -> None:
    log = log_with(10)
    assert offsets(log.history(None, 3, now=9.0)) == [8, 9, 10]


def test_history_with_since_returns_first_limit_after_it() -> None:
    log = log_with(10)
    assert offsets(log.history(4, 3, now=9.0)) == [5, 6, 7]


def test_history_with_since_before_oldest_starts_at_oldest_held() -> None:
    log = log_with(10, size=5)
    assert offsets(log.history(1, 2, now=9.0)) == [6, 7]


def test_history_with_since_at_or_past_top_is_empty() -> None:
    log = log_with(10)
    assert log.history(10, 5, now=9.0) == []
    assert log.history(50, 5, now=9.0) == []


def test_history_limit_larger_than_held_returns_all_held() -> None:
    log = log_with(3)
    assert offsets(log.history(None, 1000, now=2.0)) == [1, 2, 3]
    assert offsets(log.history(0, 1000, now=2.0)) == [1, 2, 3]


def test_idempotency_duplicate_returns_first_offset_and_no_entry() -> None:
    log = RoomLog(100, 300.0, "e-1", now=0.0)
    first = log.append(0.0, payload, idempotency_key="k")
    log.append(1.0, payload)
    again = log.append(2.0, payload, idempotency_key="k")
    assert again.duplicate and again.entry is None
    assert (again.offset, again.epoch) == (first.offset, "e-1") == (1, "e-1")
    assert log.offset == 2
    assert offsets(log.history(None, 10, now=2.0)) == [1, 2]


def test_idempotency_keys_are_per_room() -> None:
    store = HistoryStore(100, 300.0)
    store.publish("a", 0.0, payload, idempotency_key="k")
    assert not store.publish("b", 0.0, payload, idempotency_key="k").duplicate


def test_idempotency_key_expires_after_the_window() -> None:
    log = RoomLog(100, 300.0, "e-1", now=0.0, idempotency_window=300.0)
    log.append(0.0, payload, idempotency_key="k")
    assert log.append(299.9, payload, idempotency_key="k").duplicate
    fresh = log.append(300.0, payload, idempotency_key="k")
    assert not fresh.duplicate and fresh.offset == 2
    assert log.append(301.0, payload, idempotency_key="k").offset == 2  # the new use counts


def test_idempotency_key_count_is_bounded_under_a_flood_of_distinct_keys() -> None:
    max_keys = 1000
    log = RoomLog(0, 300.0, "e-1", now=0.0, idempotency_max_keys=max_keys)
    empty: Callable[[int], bytes] = lambda offset: b""  # noqa: E731
    tracemalloc.start()
    try:
        for i in range(10_000):
            log.append(1.0, empty, idempotency_key=f"k{i}")
        after_10k = tracemalloc.get_traced_memory()[0]
        for i in range(10_000, 100_000):
            log.append(1.0, empty, idempotency_key=f"k{i}")
        after_100k = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after_100k - after_10k < 64 * 1024  # unbounded would be several MB
    oldest_kept = 100_000 - max_keys
    assert log.append(2.0, empty, idempotency_key=f"k{oldest_kept}").duplicate
    assert log.append(2.0, empty, idempotency_key="k99999").duplicate
    assert not log.append(2.0, empty, idempotency_key=f"k{oldest_kept - 1}").duplicate


def test_prune_drops_expired_entries_and_keys() -> None:
    log = RoomLog(100, 10.0, "e-1", now=0.0, idempotency_window=20.0)
    log.append(0.0, payload, idempotency_key="k")
    log.prune(15.0)
    assert log.history(None, 10, now=15.0) == []
    assert not log.idle(15.0)  # the key is still live
    assert log.idle(20.0)


def test_idle_needs_ttl_seconds_without_append() -> None:
    log = RoomLog(0, 10.0, "e-1", now=0.0)
    assert not log.idle(9.0)
    assert log.idle(10.0)
    log.append(10.0, payload)
    assert not log.idle(19.0)
    assert log.idle(20.0)


def test_store_room_creates_once_and_get_does_not_create() -> None:
    store = HistoryStore(100, 300.0, epoch_factory=counting_epochs())
    assert store.get("r") is None and len(store) == 0
    log = store.room("r", 0.0)
    assert store.room("r", 1.0) is log and store.get("r") is log
    assert len(store) == 1


def test_store_prune_keeps_rooms_with_history() -> None:
    store = HistoryStore(100, 10.0, idempotency_window=1.0)
    store.publish("old", 0.0, payload)
    store.publish("new", 5.0, payload)
    assert store.prune(12.0) == 1
    assert store.get("old") is None and store.get("new") is not None


def test_store_memory_is_bounded_under_a_flood_of_rooms_after_prune() -> None:
    rooms = 50_000
    store = HistoryStore(100, 10.0, idempotency_window=10.0)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for i in range(rooms):
            store.publish(f"room:{i}", 0.0, payload, idempotency_key="k")
        flooded = tracemalloc.get_traced_memory()[0]
        assert store.prune(10.0) == rooms
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(store) == 0
    assert flooded - baseline > 10_000_000  # the flood really cost memory...
    # ...and prune gave it back: what stays is allocator noise, not 50k rooms.
    assert after - baseline < (flooded - baseline) / 100
