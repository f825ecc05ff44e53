"""roomcast.client.outbox, the commands waiting for replies across connections, fed
random connects, losses, sends and replies against a model server that remembers
publishes by idempotency key: every publish is delivered exactly once and answered, every
other command is answered or failed exactly once, and nothing is sent twice on one
connection."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.client.outbox import Outbox, Pending


class Model:
    """A client's Outbox and a server: frames that arrive on the open connection are
    done (a publish once per key) and their replies may be lost with the connection."""

    def __init__(self) -> None:
        self.outbox = Outbox()
        self.open = False
        self.delivered: dict[str, int] = {}  # key -> times the server delivered it
        self.in_flight: list[Pending] = []  # arrived; the reply not yet back
        self.outcome: dict[int, str] = {}  # command id -> answered / lost
        self.sent: list[tuple[int, int]] = []  # (connection, command id)
        self.made: dict[int, bool] = {}  # command id -> is a publish

    def send(self, pending: Pending) -> None:
        self.sent.append((self.outbox.connection, pending.id))
        self.outbox.sent(pending)
        key = pending.frame.get("idempotency_key") or f"cmd-{pending.id}"
        self.delivered.setdefault(key, 0)
        self.delivered[key] += 1  # the server delivers a key's first arrival only
        self.in_flight.append(pending)

    def command(self, publish: bool) -> None:
        n = len(self.outcome) + len(self.outbox.pending)
        frame: dict[str, Any] = ({"type": "publish", "idempotency_key": f"k{n}"} if publish
                                 else {"type": "history"})
        pending = self.outbox.add(frame, resend=publish)
        self.made[pending.id] = publish
        if self.outbox.up:
            self.send(pending)

    def connect(self) -> None:
        if not self.open:
            self.open = True
            for pending in self.outbox.connected():
                self.send(pending)

    def lose(self) -> None:
        if self.open:
            self.open = False
            self.in_flight.clear()  # their replies never come
            for pending in self.outbox.lost():
                assert not pending.resend
                self.record(pending.id, "lost")

    def reply(self, n: int) -> None:
        for pending in self.in_flight[:n]:
            answered = self.outbox.reply(pending.id)
            if answered is not None:
                self.record(answered.id, "answered")
        del self.in_flight[:n]

    def record(self, command_id: int, outcome: str) -> None:
        assert command_id not in self.outcome, "a command ended twice"
        self.outcome[command_id] = outcome


steps = st.lists(st.one_of(
    st.tuples(st.just("command"), st.booleans()),
    st.tuples(st.just("connect")),
    st.tuples(st.just("lose")),
    st.tuples(st.just("reply"), st.integers(0, 3)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(script=steps)
def test_publishes_are_delivered_once_and_every_command_ends_once(
        script: list[tuple[Any, ...]]) -> None:
    model = Model()
    for name, *args in script:
        getattr(model, name)(*args)
    # Then the link stays up until every reply is back.
    model.connect()
    model.reply(len(model.in_flight))
    assert model.outbox.pending == {}
    # Every command ended exactly once; no publish was lost: each reached the server
    # (under its one key) and was answered, however often it had to be sent.
    assert set(model.outcome) == set(model.made)
    publishes = [c for c, publish in model.made.items() if publish]
    assert all(model.outcome[c] == "answered" for c in publishes)
    assert all(model.delivered[f"k{i}"] >= 1 for i in range(len(model.made))
               if f"k{i}" in model.delivered)
    assert len([k for k in model.delivered if k.startswith("k")]) == len(publishes)
    # Other commands are sent at most once, and nothing twice on one connection.
    assert all(model.delivered[f"cmd-{c}"] == 1 for c, p in model.made.items()
               if not p and f"cmd-{c}" in model.delivered)
    assert len(model.sent) == len(set(model.sent)), "a command sent twice on one connection"


def test_a_command_made_while_down_goes_out_on_the_next_connection_and_a_drop_stops_it() -> None:
    outbox = Outbox()
    history = outbox.add({"type": "history"}, resend=False)
    publish = outbox.add({"type": "publish", "idempotency_key": "k"}, resend=True)
    assert outbox.connected() == [history, publish] and outbox.up
    outbox.sent(history)
    outbox.sent(publish)
    assert outbox.lost() == [history] and not outbox.up
    outbox.drop(publish)
    assert outbox.connected() == [] and outbox.reply(publish.id) is None
    assert history.frame == {"type": "history", "id": history.id}
    assert outbox.reply("ping-3") is None
