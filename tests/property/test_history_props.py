"""Properties of roomcast.history checked against a reference model that remembers every
(offset, time) ever published. Times are multiples of 1/4 s so float sums are exact and the
model's age comparisons cannot round differently from the implementation's."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from roomcast.history import Entry, Recovery, RoomLog

EPOCH = "e-test"
quarters = st.integers(0, 40).map(lambda q: q / 4)  # 0 .. 10 s in exact steps


def payload(offset: int) -> bytes:
    return b"m%d" % offset


def model_held(published: list[float], size: int, ttl: float, now: float) -> list[int]:
    """Offsets the log should hold: among the newest `size` and younger than `ttl`."""
    top = len(published)
    return [o for o, t in enumerate(published, 1) if o > top - size and now - t < ttl]


def model_since(published: list[float], held: list[int], since: int) -> Recovery:
    """What since() should answer, from first principles: lost = published after `since`
    and not held."""
    top = len(published)
    if since < 0 or since > top:
        return Recovery(False, [], None)
    entries = [Entry(o, published[o - 1], payload(o)) for o in held if o > since]
    lost = [o for o in range(since + 1, top + 1) if o not in held]
    if not lost:
        return Recovery(True, entries, None)
    assert lost == list(range(lost[0], lost[-1] + 1)), "the lost offsets form one range"
    return Recovery(False, entries, (lost[0], lost[-1]))


@settings(deadline=None)
@given(
    size=st.integers(0, 8),
    ttl=quarters,
    steps=st.lists(quarters, max_size=30),
    wait=quarters,
    data=st.data(),
)
def test_since_returns_exactly_the_held_messages_after_offset(
    size: int, ttl: float, steps: list[float], wait: float, data: st.DataObject
) -> None:
    log = RoomLog(size, ttl, EPOCH, now=0.0)
    published: list[float] = []
    now = 0.0
    for step in steps:
        now += step
        outcome = log.append(now, payload)
        published.append(now)
        assert outcome.offset == len(published) and outcome.entry is not None
    now += wait
    since = data.draw(st.integers(-2, len(published) + 2), label="since")

    got = log.since(since, EPOCH, now)

    assert got == model_since(published, model_held(published, size, ttl, now), since)
    assert log.since(since, "e-other", now) == Recovery(False, [], None)


@settings(deadline=None)
@given(
    size=st.integers(0, 8),
    ttl=quarters,
    steps=st.lists(quarters, max_size=30),
    wait=quarters,
    since=st.none() | st.integers(-2, 35),
    limit=st.integers(1, 10),
)
def test_history_returns_the_right_window_of_held_messages(
    size: int,
    ttl: float,
    steps: list[float],
    wait: float,
    since: int | None,
    limit: int,
) -> None:
    log = RoomLog(size, ttl, EPOCH, now=0.0)
    published: list[float] = []
    now = 0.0
    for step in steps:
        now += step
        log.append(now, payload)
        published.append(now)
    now += wait
    held = model_held(published, size, ttl, now)
    expected = held[-limit:] if since is None else [o for o in held if o > since][:limit]

    got = log.history(since, limit, now)

    assert got == [Entry(o, published[o - 1], payload(o)) for o in expected]


class RoomLogMachine(RuleBasedStateMachine):
    """RoomLog under any interleaving of publishes (with or without idempotency keys), reads,
    prunes and the passing of time, compared with the reference model."""

    log: RoomLog

    @initialize(
        size=st.integers(0, 6),
        ttl=quarters,
        window=st.integers(1, 40).map(lambda q: q / 4),
        max_keys=st.integers(1, 4),
    )
    def start(self, size: int, ttl: float, window: float, max_keys: int) -> None:
        self.size, self.ttl, self.window, self.max_keys = size, ttl, window, max_keys
        self.now = 0.0
        self.created = 0.0
        self.log = RoomLog(size, ttl, EPOCH, self.now, window, max_keys)
        self.published: list[float] = []  # time of every offset, offset 1 first
        self.key_uses: list[tuple[str, int, float]] = []  # every key use that was not a duplicate

    def live_key(self, key: str) -> tuple[int, float] | None:
        """The (offset, time) a key still answers with: its last use that was not a duplicate,
        if it is among the newest `max_keys` such uses and younger than the window."""
        recent = self.key_uses[-self.max_keys :]
        for used, offset, t in reversed(recent):
            if used == key:
                return (offset, t) if self.now - t < self.window else None
        return None

    @rule(dt=quarters)
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(key=st.none() | st.sampled_from("abcdef"))
    def publish(self, key: str | None) -> None:
        first = self.live_key(key) if key is not None else None
        outcome = self.log.append(self.now, payload, idempotency_key=key)
        assert outcome.epoch == EPOCH
        if first is not None:
            assert (outcome.offset, outcome.duplicate, outcome.entry) == (first[0], True, None)
            return
        self.published.append(self.now)
        offset = len(self.published)
        assert not outcome.duplicate
        assert outcome.entry == Entry(offset, self.now, payload(offset))
        if key is not None:
            self.key_uses.append((key, offset, self.now))

    @rule(data=st.data())
    def since(self, data: st.DataObject) -> None:
        since = data.draw(st.integers(-1, len(self.published) + 1), label="since")
        held = model_held(self.published, self.size, self.ttl, self.now)
        assert self.log.since(since, EPOCH, self.now) == model_since(self.published, held, since)

    @rule(since=st.none() | st.integers(-1, 40), limit=st.integers(1, 8))
    def history(self, since: int | None, limit: int) -> None:
        held = model_held(self.published, self.size, self.ttl, self.now)
        expected = held[-limit:] if since is None else [o for o in held if o > since][:limit]
        got = self.log.history(since, limit, self.now)
        assert [e.offset for e in got] == expected

    @rule()
    def prune(self) -> None:
        self.log.prune(self.now)

    @rule()
    def idle(self) -> None:
        last = self.published[-1] if self.published else self.created
        held = model_held(self.published, self.size, self.ttl, self.now)
        keys_live = any(self.live_key(k) is not None for k, _, _ in self.key_uses)
        expected = not held and not keys_live and self.now - last >= self.ttl
        assert self.log.idle(self.now) == expected

    @invariant()
    def offset_is_count_of_new_publishes(self) -> None:
        if hasattr(self, "log"):
            assert self.log.offset == len(self.published)
            assert self.log.epoch == EPOCH


TestRoomLogMachine = RoomLogMachine.TestCase
TestRoomLogMachine.settings = settings(stateful_step_count=40, deadline=None)
