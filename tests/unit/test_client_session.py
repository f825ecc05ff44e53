"""roomcast.client.session, the client's pure bookkeeping of rooms and positions: fed the
frames a server sends, it delivers each message of a stream once and in order, follows a
`reset` into a new epoch (never taking the new stream's offsets for the old one's), and
resubscribes with `since` in the epoch it is in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.client import Position, Recovery, Reset
from roomcast.client.session import MAX_ROOMS, Filters, Session

ROOM = "project:12"
NO_FILTERS = Filters.make(None, None, False)


def subscribed(book: Session, command_id: int, room: str = ROOM, **entry: Any) -> Any:
    """Feed a `subscribed` reply with one room's entry."""
    return book.on_subscribed(command_id, {room: {"ok": True, **entry}})


def fresh(offset: int = 0, epoch: str = "e1") -> Session:
    """A session subscribed to ROOM, the room at `offset` of stream `epoch`."""
    book = Session()
    book.keep([ROOM], NO_FILTERS, None)
    book.sent_subscribe(1, [ROOM], {})
    subscribed(book, 1, offset=offset, epoch=epoch)
    return book


def delivered(book: Session, offsets: range | list[int], room: str = ROOM) -> list[int]:
    """The offsets of those messages the session hands to the app."""
    return [o for o in offsets if book.on_message(room, o).deliver]


# ---------------------------------------------------------------- resets (§17)
def test_a_new_stream_after_a_reset_is_delivered_from_offset_1() -> None:
    """The stream was replaced (Redis restarted empty): its offsets start again at 1 and
    every one of them reaches the app, where offsets alone would call them duplicates."""
    book = fresh(0)
    assert delivered(book, range(1, 101)) == list(range(1, 101))
    reset = book.on_reset(ROOM, "e2", 0, None)
    assert reset == Reset(ROOM, "e2", 0, None, Position(100, "e1"))
    assert reset is not None and reset.epoch_changed
    assert book.positions[ROOM] == Position(0, "e2")
    assert delivered(book, range(1, 151)) == list(range(1, 151))
    assert delivered(book, range(1, 151)) == []  # and then each one only once


def test_a_reset_whose_start_is_gone_goes_on_after_its_offset() -> None:
    book = fresh(40)
    reset = book.on_reset(ROOM, "e2", 7, (1, 7))
    assert reset is not None and reset.missed == (1, 7) and reset.epoch_changed
    assert reset.frame() == {"type": "reset", "room": ROOM, "epoch": "e2", "offset": 7,
                             "missed": {"from": 1, "to": 7}}
    assert delivered(book, range(1, 12)) == [8, 9, 10, 11]


def test_a_gap_in_the_same_stream_moves_the_position_past_it() -> None:
    book = fresh(10)
    reset = book.on_reset(ROOM, "e1", 20, (11, 20))
    assert reset is not None and not reset.epoch_changed
    assert reset.frame() == {"type": "reset", "room": ROOM, "epoch": "e1", "offset": 20,
                             "missed": {"from": 11, "to": 20}}
    assert book.positions[ROOM] == Position(20, "e1")
    assert delivered(book, range(15, 23)) == [21, 22]


def test_a_reset_in_the_same_stream_never_moves_the_position_back() -> None:
    book = fresh(30)
    assert book.on_reset(ROOM, "e1", 12, (5, 12)) is not None
    assert book.positions[ROOM] == Position(30, "e1")
    assert delivered(book, range(13, 32)) == [31]


def test_a_reset_for_a_room_not_kept_is_ignored() -> None:
    book = fresh(3)
    book.forget([ROOM])
    assert book.on_reset(ROOM, "e2", 0, None) is None
    assert ROOM not in book.positions


def test_a_reset_ends_a_replay() -> None:
    book = fresh(5)
    book.new_connection()
    (_, rooms, since), = list(book.resubscribe())
    book.sent_subscribe(2, rooms, since)
    subscribed(book, 2, offset=9, epoch="e1", recovered=True)
    assert book.on_message(ROOM, 6).replayed
    book.on_reset(ROOM, "e2", 0, None)
    first = book.on_message(ROOM, 1)
    assert first.deliver and not first.replayed


def test_after_a_reset_a_reconnect_resumes_in_the_new_epoch() -> None:
    book = fresh(100)
    book.on_reset(ROOM, "e2", 0, None)
    delivered(book, range(1, 4))
    book.new_connection()
    assert list(book.resubscribe()) == [(NO_FILTERS, [ROOM], {ROOM: Position(3, "e2")})]


# ---------------------------------------------------------------- resubscribe and recovery
def test_resubscribe_groups_rooms_by_filters_at_most_a_hundred_a_command() -> None:
    book = Session()
    presence = Filters.make(None, None, True)
    book.keep([f"a{i}" for i in range(150)], NO_FILTERS, None)
    book.keep(["p1"], presence, {"p1": {"offset": 4, "epoch": "e"}})
    plan = list(book.resubscribe())
    assert [(f, len(rooms)) for f, rooms, _ in plan] == [(NO_FILTERS, MAX_ROOMS),
                                                          (NO_FILTERS, 50), (presence, 1)]
    assert plan[2][2] == {"p1": Position(4, "e")}
    assert presence.fields() == {"presence": True}


def test_a_resume_that_recovered_marks_the_replayed_messages() -> None:
    book = fresh(5)
    book.new_connection()
    (_, rooms, since), = list(book.resubscribe())
    book.sent_subscribe(2, rooms, since)
    result = subscribed(book, 2, offset=8, epoch="e1", recovered=True)
    assert result.recoveries == [Recovery(ROOM, True, "e1", 8, Position(5, "e1"))]
    assert [(o, book.on_message(ROOM, o).replayed) for o in (6, 7, 8, 9)] == [
        (6, True), (7, True), (8, True), (9, False)]


def test_a_resume_into_another_epoch_starts_at_its_top() -> None:
    book = fresh(5)
    book.new_connection()
    (_, rooms, since), = list(book.resubscribe())
    book.sent_subscribe(2, rooms, since)
    (recovery,) = subscribed(book, 2, offset=3, epoch="e2", recovered=False).recoveries
    assert recovery.epoch_changed and not recovery.recovered
    assert book.positions[ROOM] == Position(3, "e2")
    assert delivered(book, [1, 2, 3, 4]) == [4]


def test_a_refused_room_is_dropped_unless_the_backplane_is_unavailable() -> None:
    book = Session()
    book.keep(["a", "b"], NO_FILTERS, None)
    book.sent_subscribe(1, ["a", "b"], {})
    out = book.on_subscribed(1, {"a": {"ok": False, "error": "forbidden"},
                                 "b": {"ok": False, "error": "unavailable"}})
    assert [r.error for r in out.results] == ["forbidden", "unavailable"]
    assert list(book.subs) == ["b"]


# ---------------------------------------------------------------- any sequence of frames
@dataclass
class Server:
    """A model of what the contract lets a server send one subscriber of one room: each
    step feeds the session its frames and records what the app must get, in order."""

    book: Session
    epoch: str = "e0"
    top: int = 0  # the stream's last offset
    sent: int = 0  # the last offset of this epoch the subscriber was sent
    epochs: int = 0
    seen: Position = field(default_factory=lambda: Position(0, "e0"))  # by the contract
    next_id: int = 2
    expected: list[tuple[str, int, bool]] = field(default_factory=list)
    got: list[tuple[str, int, bool]] = field(default_factory=list)
    resets: list[Reset] = field(default_factory=list)

    def send(self, offset: int) -> None:
        delivery = self.book.on_message(ROOM, offset)
        if delivery.deliver:
            self.got.append((self.book.positions[ROOM].epoch, offset, delivery.replayed))

    def publish(self, n: int) -> None:
        for _ in range(n):
            self.top += 1
            self.expected.append((self.epoch, self.top, False))
            self.send(self.top)
            self.sent = self.top
            self.seen = Position(self.top, self.epoch)

    def redeliver(self, back: int) -> None:
        """A message sent already (a replay overlapping live delivery) comes again."""
        if self.sent:
            self.send(max(1, self.sent - back))

    def new_epoch(self) -> str:
        self.epochs += 1
        self.epoch, self.top, self.sent = f"e{self.epochs}", 0, 0
        return self.epoch

    def replace(self, before: int, gone: int) -> None:
        """The stream is replaced; `before` messages went into the new one before the
        node noticed, the first `gone` of them no longer in history."""
        self.new_epoch()
        self.top = before
        gone = min(gone, before)
        self.reset(gone, (1, gone) if gone else None)
        for offset in range(gone + 1, before + 1):
            self.expected.append((self.epoch, offset, False))
            self.send(offset)
            self.sent = offset
            self.seen = Position(offset, self.epoch)

    def gap(self, n: int) -> None:
        """`n` messages of this stream that history can no longer fill."""
        if n:
            self.top += n
            self.reset(self.top, (self.sent + 1, self.top))
            self.sent = self.top

    def reset(self, offset: int, missed: tuple[int, int] | None) -> None:
        reset = self.book.on_reset(ROOM, self.epoch, offset, missed)
        assert reset == Reset(ROOM, self.epoch, offset, missed, self.seen)
        self.resets.append(reset)
        self.seen = Position(offset, self.epoch)

    def reconnect(self, away: int, replaced: bool) -> None:
        """The subscriber reconnects after `away` messages; the server recovers them, or
        answers `recovered: false` when the stream was replaced meanwhile."""
        if replaced:
            self.new_epoch()
        self.top += away
        self.book.new_connection()
        ((_, rooms, since),) = list(self.book.resubscribe())
        assert since[ROOM] == self.seen
        command_id, self.next_id = self.next_id, self.next_id + 1
        self.book.sent_subscribe(command_id, rooms, since)
        same = since[ROOM].epoch == self.epoch
        out = subscribed(self.book, command_id, offset=self.top, epoch=self.epoch,
                         recovered=same)
        assert [r.recovered for r in out.recoveries] == [same]
        start = since[ROOM].offset if same else self.top
        for offset in range(start + 1, self.top + 1):
            self.expected.append((self.epoch, offset, True))
            self.send(offset)
        self.sent = self.top
        self.seen = Position(self.top, self.epoch)


steps = st.lists(st.one_of(
    st.tuples(st.just("publish"), st.integers(0, 5)),
    st.tuples(st.just("redeliver"), st.integers(0, 6)),
    st.tuples(st.just("replace"), st.integers(0, 6), st.integers(0, 6)),
    st.tuples(st.just("gap"), st.integers(0, 4)),
    st.tuples(st.just("reconnect"), st.integers(0, 5), st.booleans()),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, 50), script=steps)
def test_any_frames_deliver_each_message_of_each_epoch_once_in_order(
    start: int, script: list[tuple[Any, ...]]
) -> None:
    book = Session()
    server = Server(book, top=start, sent=start, seen=Position(start, "e0"))
    book.keep([ROOM], NO_FILTERS, None)
    book.sent_subscribe(1, [ROOM], {})
    subscribed(book, 1, offset=start, epoch=server.epoch)
    for name, *args in script:
        getattr(server, name)(*args)
        assert book.positions[ROOM] == server.seen
    assert server.got == server.expected
    assert len(set((e, o) for e, o, _ in server.got)) == len(server.got)


# ---------------------------------------------------------------- server-side subscriptions (§12)
def test_a_room_the_server_subscribed_is_kept_and_resubscribed_with_since() -> None:
    book = Session()
    book.new_connection()
    results = book.on_server_subscribed({ROOM: {"ok": True, "offset": 45, "epoch": "e9"}})
    assert [(r.room, r.ok) for r in results] == [(ROOM, True)]
    assert delivered(book, [44, 45, 46, 47]) == [46, 47]
    book.new_connection()
    assert list(book.resubscribe()) == [(NO_FILTERS, [ROOM], {ROOM: Position(47, "e9")})]


def test_a_server_subscribe_of_a_kept_room_keeps_its_position_and_filters() -> None:
    presence = Filters.make(None, None, True)
    book = Session()
    book.keep([ROOM], presence, {ROOM: {"offset": 3, "epoch": "e1"}})
    book.on_server_subscribed({ROOM: {"ok": True, "offset": 9, "epoch": "e1"},
                               "refused": {"ok": False, "error": "forbidden"}})
    assert (book.subs, book.positions) == ({ROOM: presence}, {ROOM: Position(3, "e1")})


def test_a_server_unsubscribe_forgets_the_room() -> None:
    book = Session()
    book.on_server_subscribed({ROOM: {"ok": True, "offset": 1, "epoch": "e1"}})
    assert book.on_server_unsubscribed([ROOM]) == [ROOM]
    assert (book.subs, book.positions, list(book.resubscribe())) == ({}, {}, [])


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 1000), live=st.lists(st.integers(1, 5), max_size=10),
       away=st.integers(0, 20), same_epoch=st.booleans())
def test_server_side_rooms_resume_after_a_reconnect_without_loss_or_doubles(
    start: int, live: list[int], away: int, same_epoch: bool
) -> None:
    """The server subscribes the client at `start`; messages come (some twice), the link
    drops, `away` more are published; the resume delivers each offset once, in order."""
    book = Session()
    book.new_connection()
    book.on_server_subscribed({ROOM: {"ok": True, "offset": start, "epoch": "e1"}})
    top, got = start, []
    for step in live:
        for offset in range(max(start + 1, top - 1), top + step + 1):  # overlaps by one
            if book.on_message(ROOM, offset).deliver:
                got.append(offset)
        top += step
    assert got == list(range(start + 1, top + 1))
    book.new_connection()
    ((_, rooms, since),) = list(book.resubscribe())
    assert since == {ROOM: Position(top, "e1")}
    book.sent_subscribe(7, rooms, since)
    epoch = "e1" if same_epoch else "e2"
    new_top = top + away if same_epoch else away
    out = subscribed(book, 7, offset=new_top, epoch=epoch, recovered=same_epoch)
    assert [(r.recovered, r.epoch_changed) for r in out.recoveries] == [
        (same_epoch, not same_epoch)]
    first = top + 1 if same_epoch else new_top + 1
    replay = [o for o in range(first, new_top + 1) if book.on_message(ROOM, o).deliver]
    assert replay == list(range(first, new_top + 1))
    assert book.positions[ROOM] == Position(new_top, epoch)
