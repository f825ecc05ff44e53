"""roomcast.events: event ids and bodies, the debounce of "gone" transitions, the retry
schedule and the bounded outbox, with time passed in; plus a property against a model."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.events import RETRY_TRIES, Debouncer, Event, Outbox, iso_ts, retry_delay


def test_body_and_id() -> None:
    ev = Event("room_vacated", "room", "project:12", 17, 1_795_000_000.25)
    assert ev.id == "room_vacated:project:12:17"
    assert msgspec.json.decode(ev.body()) == {
        "id": "room_vacated:project:12:17", "event": "room_vacated", "room": "project:12",
        "ts": iso_ts(1_795_000_000.25)}
    user = Event("user_offline", "user", "alice", 4, 0.0)
    assert msgspec.json.decode(user.body())["user_id"] == "alice"
    assert iso_ts(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_ts(1.9996) == "1970-01-01T00:00:02.000Z"


def test_brief_absence_sends_nothing() -> None:
    deb = Debouncer(5.0)
    [first] = deb.up("room", "r", 0.0, 100.0)
    assert first.event == "room_occupied" and first.seq == 100_001  # numbered from wall ms
    deb.down("room", "r", 1.0, 101.0)
    assert deb.due(5.9) == []
    assert deb.up("room", "r", 5.9, 105.9) == []  # back in time: no vacated, no occupied
    assert deb.due(100.0) == []
    deb.down("room", "r", 10.0, 110.0)
    [gone] = deb.due(15.0)
    assert (gone.event, gone.seq, gone.wall) == ("room_vacated", 100_004, 110.0)
    [again] = deb.up("user", "r", 16.0, 116.0)
    assert again.event == "user_online" and again.seq == 116_001
    [back] = deb.up("room", "r", 16.0, 116.0)
    assert back.id == "room_occupied:r:116001"  # forgotten once gone; ids never repeat
    assert deb.down("user", "nobody", 17.0, 117.0) is None and deb.pending("user", "nobody") is None


def test_given_sequence_numbers_are_used() -> None:
    deb = Debouncer(1.0)
    [ev] = deb.up("user", "alice", 0.0, 0.0, seq=41)
    assert ev.id == "user_online:alice:41"
    deb.down("user", "alice", 1.0, 1.0, seq=42)
    assert deb.pending("user", "alice") == 42
    assert [e.id for e in deb.due(2.0)] == ["user_offline:alice:42"]
    deb.down("user", "bob", 0.0, 0.0, seq=7)  # reaped elsewhere: held all the same
    deb.down("user", "alice", 3.0, 3.0, seq=44)
    # the backplane found the "gone" 44 long enough: it goes before the "up" 45
    events = deb.up("user", "alice", 3.5, 3.5, seq=45, confirmed=44, confirmed_wall=3.0)
    assert [(e.id, e.wall) for e in events] == [
        ("user_offline:alice:44", 3.0), ("user_online:alice:45", 3.5)]
    assert [e.id for e in deb.due(10.0)] == ["user_offline:bob:7"]


def test_numbering_starts_at_the_base() -> None:
    deb = Debouncer(1.0, base=1000)
    assert [e.id for e in deb.up("room", "r", 0.0, 0.0)] == ["room_occupied:r:1001"]


def test_retry_schedule() -> None:
    assert [retry_delay(n) for n in range(1, RETRY_TRIES)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert retry_delay(RETRY_TRIES) is None


def test_outbox_orders_per_key_retries_and_bounds() -> None:
    box = Outbox(limit=3)
    a1, a2 = Event("room_occupied", "room", "a", 1, 0), Event("room_vacated", "room", "a", 2, 0)
    b1 = Event("user_online", "user", "b", 1, 0)
    assert box.push(a1) and box.push(a2) and box.push(b1)
    assert not box.push(Event("user_offline", "user", "b", 2, 0))
    assert box.dropped == 1 and len(box) == 3
    assert box.take(0.0) == [a1, b1]  # one per key
    assert box.take(0.0) == []
    box.done(b1)
    assert box.failed(a1, 10.0) == 11.0
    assert box.take(10.5) == [] and box.next_wake() == 11.0
    assert box.take(11.0) == [a1]  # a2 waits behind the retried a1
    tries = 2  # attempts made so far
    while box.failed(a1, 0.0) is not None:
        tries += 1
        assert box.take(1e9) == [a1]
    assert tries == RETRY_TRIES and box.given_up == 1
    assert box.take(0.0) == [a2]


# ------------------------------------------------------------------ the property
quarters = st.integers(1, 12).map(lambda q: q / 4)


def model(times: list[float], delay: float, end: float) -> list[tuple[str, int]]:
    """(event, seq) a key should produce: transitions alternate up, down, up, …; a
    "gone" at t is sent when no "up" comes before t + delay (and t + delay <= end). A key
    is numbered from the time (ms) of its first transition, and again once it was gone."""
    out: list[tuple[str, int]] = []
    present = False
    start: int | None = None
    count = 0
    for i, t in enumerate(times):
        if start is None:
            start, count = int(t * 1000), 0
        count += 1
        seq = start + count
        if i % 2 == 0:  # up
            if not present:
                out.append(("occupied", seq))
                present = True
        else:
            following = times[i + 1] if i + 1 < len(times) else None
            came_back = following is not None and following < t + delay
            if not came_back and t + delay <= end:
                out.append(("vacated", seq))
                present, start = False, None
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), quarters), max_size=40),
       st.sampled_from([0.25, 1.0, 1.5]), quarters)
def test_debounce_matches_model(steps: list[tuple[str, float]], delay: float,
                                tail: float) -> None:
    deb = Debouncer(delay)
    now = 0.0
    times: dict[str, list[float]] = {}
    emitted: list[Event] = []
    for name, gap in steps:
        now += gap
        emitted += deb.due(now)
        mine = times.setdefault(name, [])
        if len(mine) % 2 == 0:
            emitted += deb.up("room", name, now, now)
        else:
            deb.down("room", name, now, now)
        mine.append(now)
    end = now + tail
    emitted += deb.due(end)
    for name, mine in times.items():
        got = [(e.event.removeprefix("room_"), e.seq) for e in emitted if e.name == name]
        assert got == model(mine, delay, end)
    assert len({e.id for e in emitted}) == len(emitted)  # one id per transition
    for name in times:  # one key's events in the order they happened
        own = [e.wall for e in emitted if e.name == name]
        assert own == sorted(own)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["push", "take", "ok", "fail"]),
                          st.sampled_from(["a", "b", "c"])), max_size=60),
       st.integers(1, 6))
def test_outbox_keeps_each_keys_order_and_its_bound(ops: list[tuple[str, str]],
                                                    limit: int) -> None:
    box = Outbox(limit=limit)
    now, made = 0.0, 0
    pushed: dict[str, list[Event]] = {}
    finished: dict[str, list[Event]] = {}
    flying: dict[str, Event] = {}
    for op, name in ops:
        now += 1.0
        if op == "push":
            made += 1
            ev = Event("room_occupied", "room", name, made, now)
            if box.push(ev):
                pushed.setdefault(name, []).append(ev)
        elif op == "take":
            for ev in box.take(now + 1000.0):
                assert ev.name not in flying  # one at a time per key
                flying[ev.name] = ev
        elif name in flying:
            ev = flying.pop(name)
            if op == "ok" or box.failed(ev, now) is None:
                if op == "ok":
                    box.done(ev)
                finished.setdefault(name, []).append(ev)
        assert len(box) <= limit
    for name, done in finished.items():  # finished in the order they were pushed
        assert done == pushed[name][:len(done)]
    assert box.dropped + sum(map(len, pushed.values())) == made
