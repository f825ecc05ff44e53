"""A stateful model of the routing core (rooms, history, permissions) against a reference model.

`CoreDriver` drives the product's routing core (`roomcast.core.RoutingCore`) with the
product's memory backplane, synchronously and without sockets, performing the effects the
core returns as the Router actor does. The reference model knows nothing of those modules:
it keeps plain lists of what was published and who subscribed with which filters, and
predicts every frame each connection must get. After every step the frames must
be exactly the predicted ones, and each connection's stream must be ordered, duplicate-free,
contiguous where unfiltered, and only from rooms its user may read.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import jwt
from hypothesis import event as note
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from roomcast import protocol as p
from roomcast.auth import Authenticator, Principal
from roomcast.backplane.memory import MemoryBackplane
from roomcast.core import Ask, Effects, Fanout, Peer, RoutingCore, Send
from roomcast.settings import Settings

SECRET = "model-secret-" + "m" * 40
NOW = 1_800_000_000.0  # wall time the tokens are checked at
TS_BASE = 1_800_000_000.0  # message `ts` = TS_BASE + the model's clock

# Who may do what, as token claims (checked by the real Authenticator and glob matching) ...
CLAIMS: dict[str, dict[str, Any]] = {
    "alice": {"rooms": ["project:*"], "publish": ["project:*"], "info": {"name": "Alice"}},
    "bob": {"rooms": ["project:1", "chat:?"], "publish": ["chat:*", "project:1"]},
    "carol": {},  # no claims: only the personal room, may publish nowhere
    "dave": {"rooms": ["*"], "publish": ["user:*", "project:?"]},
}
ROOMS = ["project:1", "project:2", "chat:1", "chat:22", "user:alice", "user:carol", "bad room", ""]
VALID = {r for r in ROOMS if r not in ("bad room", "")}
# Drawn more often: the rooms most users share, so that messages meet subscribers.
LIKELY = ["project:1"] * 5 + ["project:2", "chat:1"] * 2 + ROOMS
USER_CHOICES = ["alice", "bob", "dave"] * 2 + ["carol"]
# ... and the same permissions written out by hand for the model.
READ = {
    "alice": {"project:1", "project:2", "user:alice"},
    "bob": {"project:1", "chat:1"},
    "carol": {"user:carol"},
    "dave": VALID,
}
WRITE = {
    "alice": {"project:1", "project:2"},
    "bob": {"chat:1", "chat:22", "project:1"},
    "carol": set(),
    "dave": {"user:alice", "user:carol", "project:1", "project:2"},
}
INFO = {user: CLAIMS[user].get("info", {}) for user in CLAIMS}


def principal_for(user: str) -> Principal:
    auth = Authenticator(Settings(jwt_secret=SECRET, node="model"))
    token = jwt.encode({"sub": user, "exp": NOW + 3600, **CLAIMS[user]}, SECRET, "HS256")
    return auth.verify(token, NOW)


PRINCIPALS = {user: principal_for(user) for user in CLAIMS}

# ---------------------------------------------------------------------------- strategies
quarters = st.integers(0, 12).map(lambda q: q / 4)  # exact float steps of time
# Few distinct values, so that `where` filters and data often meet; the odd ones test what
# JSON equality means (true is not 1, 1 is 1.0, -0.0 is 0, big integers stay exact).
common = st.sampled_from([1, "a", None, True])
scalars = common | st.sampled_from(
    [0, 1.0, -0.0, 2.5, False, "1", "é", "", 2**53 + 1, 2**64, -(2**63) - 1, 1e308]
)
json_values = common | st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=2)
    | st.dictionaries(st.sampled_from(["k", "n"]), inner, max_size=2),
    max_leaves=3,
)
payloads = (
    st.fixed_dictionaries({"k": common}, optional={"n": json_values})
    | st.fixed_dictionaries({"k": json_values}, optional={"n": json_values, "tag": scalars})
    | st.dictionaries(st.sampled_from(["n", "tag"]), json_values, max_size=2)
    | scalars
)
event_names = st.sampled_from(["a", "b", "c.d"])
event_lists = st.sampled_from([["a"], ["a", "c.d"], [], ["zz"]])
where_dicts = st.fixed_dictionaries({"k": common}) | st.dictionaries(
    st.sampled_from(["k", "n"]), json_values, max_size=2
)
# (events, where): none, either or both
filters = (
    st.tuples(st.none(), st.none())
    | st.tuples(event_lists, st.none())
    | st.tuples(st.none(), where_dicts)
    | st.tuples(event_lists, where_dicts)
)
# since: (how far back from the room's current offset, -1 = one ahead; which epoch)
sinces = st.dictionaries(
    st.sampled_from(LIKELY),
    st.tuples(st.integers(-1, 6), st.sampled_from(["current"] * 3 + ["e-1", "e-9"])),
    max_size=2,
)
picks = st.integers(0, 63)  # which live connection, modulo how many there are


# ---------------------------------------------------------------------------- the driver
class Outlet:
    """A connection's handle as the core sees it (a model connection has nothing queued)."""

    def __init__(self, conn: int) -> None:
        self.conn = conn
        self.queued = 0


def run_sync(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the memory backplane's) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the memory backplane waited for something")


def payload_of(frame: bytes) -> bytes:
    """The payload of an unmasked WebSocket text frame as the core frames it."""
    n = frame[1] & 0x7F
    return frame[2:] if n < 126 else frame[4:] if n == 126 else frame[10:]


class CoreDriver:
    """Drives the product's routing core with the product's memory backplane, synchronously,
    as the Router actor does: it performs every effect (frames go to plain lists, questions
    go to the backplane and their answers back into the core) and is the backplane's sink."""

    def __init__(self, size: int, ttl: float, window: float, max_subscriptions: int) -> None:
        epochs = itertools.count(1)
        settings = Settings(jwt_secret=SECRET, node="model", history_size=size,
                            history_ttl=ttl, idempotency_window=window,
                            max_subscriptions=max_subscriptions, rate_per_second=1e9,
                            rate_burst=1_000_000, max_connections_per_user=100,
                            max_pending=100_000)
        self.now = 0.0
        self.core = RoutingCore(settings)
        self.core.wall_base = TS_BASE
        self.backplane = MemoryBackplane(settings, clock=lambda: self.now,
                                         epoch_factory=lambda: f"e-{next(epochs)}")
        self.backplane.attach(self)
        self.store = self.backplane.store
        self.table = self.core.table
        self.peers: dict[int, Peer] = {}
        self.outbox: dict[int, list[bytes]] = {}

    def connect(self, conn: int, principal: Principal) -> None:
        peer, _connected = self.core.admit(principal, f"model:{conn}", "model", self.now)
        peer.outlet = Outlet(conn)
        self.peers[conn] = peer
        self.outbox[conn] = []

    def disconnect(self, conn: int) -> None:
        peer = self.peers.pop(conn)
        del self.outbox[conn]
        self.perform(self.core.leave(peer, 1000))

    def command(self, conn: int, frame: dict[str, Any]) -> None:
        """One client frame, as the connection actor hands it to the Router."""
        self.perform(self.core.command(self.peers[conn], json.dumps(frame), self.now))

    def prune(self) -> None:
        """The memory backplane's periodic prune: rooms with a local subscriber are kept."""
        self.backplane.prune()

    def perform(self, effects: Effects) -> None:
        for effect in effects:
            match effect:
                case Send(peer, frame):
                    self._to(peer, frame)
                case Fanout(frame, peers):
                    for peer in peers:
                        self._to(peer, frame)
                case Ask(method, args, then):
                    answer = run_sync(getattr(self.backplane, method)(*args))
                    if then is not None:
                        self.perform(then(answer))
                case _:
                    raise AssertionError(f"the model expects no {effect!r}")

    def _to(self, peer: Peer, frame: bytes) -> None:
        self.outbox[peer.outlet.conn].append(payload_of(frame))

    # the backplane's sink
    def deliver(self, room: str, offset: int, payload: bytes, event: str | None) -> None:
        self.perform(self.core.deliver(room, offset, payload, event))

    def presence_changed(self, room: str, user_id: str, info: dict[str, Any] | None,
                         joined: bool) -> None:
        self.perform(self.core.presence_changed(room, user_id, info, joined))

    def reset(self, room: str, epoch: str, offset: int, missed: tuple[int, int] | None
              ) -> None:
        raise AssertionError("the memory backplane never replaces a watched room's stream")

    def control(self, kind: str, payload: dict[str, Any]) -> None:
        self.perform(self.core.control(kind, payload, self.now))

    def resumed(self) -> None:
        self.core.resumed()


# ---------------------------------------------------------------------------- the model
def canon(value: Any) -> Any:
    """A value's meaning as JSON: `true` is not `1`, `1` is `1.0`, key order does not count."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", value)
    if isinstance(value, list):
        return ("list", tuple(canon(v) for v in value))
    if isinstance(value, dict):
        return ("obj", frozenset((k, canon(v)) for k, v in value.items()))
    return ("str" if isinstance(value, str) else "null", value)


@dataclass
class MSub:
    events: list[str] | None
    where: dict[str, Any] | None
    presence: bool

    def admits(self, event: str | None, data: Any) -> bool:
        if self.events is not None and event not in self.events:
            return False
        if not self.where:
            return True
        return isinstance(data, dict) and all(
            key in data and canon(data[key]) == canon(value) for key, value in self.where.items()
        )


@dataclass
class MMessage:
    offset: int
    time: float
    frame: dict[str, Any]


@dataclass
class MRoom:
    epoch: str
    created: float
    messages: list[MMessage] = field(default_factory=list)
    keys: dict[str, tuple[int, float]] = field(default_factory=dict)  # key -> (offset, time)


@dataclass
class Stream:
    """What one connection has seen of one room since it (re)subscribed."""

    last: int
    contiguous: bool


class RouterModel(RuleBasedStateMachine):
    """Any interleaving of connects, subscribes, publishes, reads and the passing of time."""

    subscribed = Bundle("subscribed")  # rooms some subscribe named, so publishes find them

    def __init__(self) -> None:
        super().__init__()
        self.ids = itertools.count(1)
        self.live: list[int] = []
        self.user: dict[int, str] = {}
        self.subs: dict[int, dict[str, MSub]] = {}  # conn -> room -> filters, in order
        self.rooms: dict[str, MRoom] = {}
        self.epochs = itertools.count(1)
        self.expected: dict[int, list[dict[str, Any]]] = {}
        self.streams: dict[int, dict[str, Stream]] = {}
        self.pending_since: dict[int, dict[str, tuple[int, str]]] = {}

    @initialize(
        size=st.integers(0, 4),
        ttl=quarters,
        window=st.integers(1, 12).map(lambda q: q / 4),
        max_subscriptions=st.integers(1, 6),
        users=st.lists(st.sampled_from(USER_CHOICES), min_size=2, max_size=4),
        seed=st.lists(filters, max_size=4),
    )
    def start(self, size: int, ttl: float, window: float, max_subscriptions: int,
              users: list[str], seed: list[tuple[Any, Any]]) -> None:
        """A router with a few connections, the first ones subscribed to project:1 with the
        `seed` filters."""
        self.size, self.ttl, self.window = size, ttl, window
        self.max_subscriptions = max_subscriptions
        self.router = CoreDriver(size, ttl, window, max_subscriptions)
        self.now = 0.0
        for user in users:
            self.connect(user)
        for pick, pair in enumerate(seed[: len(users)]):
            self.subscribe(pick, ["project:1"], pair, True, {})
            self.every_connection_got_exactly_what_the_model_predicts()

    # ------------------------------------------------------------ model helpers
    def conn(self, pick: int) -> int:
        return self.live[pick % len(self.live)]

    def expect(self, conn: int, frame: dict[str, Any]) -> None:
        self.expected[conn].append(frame)

    def held(self, room: MRoom) -> list[MMessage]:
        top = len(room.messages)
        return [m for m in room.messages
                if m.offset > top - self.size and self.now - m.time < self.ttl]

    def room(self, name: str) -> MRoom:
        """The room's history, started (with the next epoch) when it is not known."""
        if name not in self.rooms:
            self.rooms[name] = MRoom(f"e-{next(self.epochs)}", self.now)
        return self.rooms[name]

    def position(self, room: str, back: int, epoch: str) -> tuple[int, str]:
        """A `since` position `back` messages before the room's end, in the named epoch."""
        log = self.rooms.get(room)
        top = len(log.messages) if log else 0
        if epoch == "current":
            epoch = log.epoch if log else "e-0"
        return max(top - back, 0), epoch

    def count(self, room: str, user: str) -> int:
        return sum(1 for c in self.live if self.user[c] == user and room in self.subs[c])

    def watchers(self, room: str) -> list[int]:
        return [c for c in self.live if room in self.subs[c] and self.subs[c][room].presence]

    def presence_event(self, room: str, user: str, joined: bool) -> None:
        body: dict[str, Any] = {"type": "joined" if joined else "left", "room": room,
                                "user_id": user}
        if joined:
            body["info"] = INFO[user]
        for c in self.watchers(room):
            self.expect(c, body)
            note(f"presence: {body['type']} delivered")

    def error(self, conn: int, code: str, cmd_id: Any) -> None:
        self.expect(conn, {"type": "error", "id": cmd_id, "code": code})

    # ------------------------------------------------------------ rules
    @precondition(lambda self: len(self.live) < 6)
    @rule(user=st.sampled_from(USER_CHOICES))
    def connect(self, user: str) -> None:
        conn = next(self.ids)
        self.live.append(conn)
        self.user[conn], self.subs[conn], self.expected[conn] = user, {}, []
        self.streams[conn] = {}
        self.router.connect(conn, PRINCIPALS[user])

    @precondition(lambda self: len(self.live) > 1)
    @rule(pick=picks)
    def disconnect(self, pick: int) -> None:
        conn = self.conn(pick)
        self.check_outbox(conn)
        user, rooms = self.user[conn], list(self.subs[conn])
        self.live.remove(conn)
        del self.subs[conn], self.expected[conn], self.streams[conn]
        self.router.disconnect(conn)
        for room in rooms:
            if self.count(room, user) == 0:
                self.presence_event(room, user, joined=False)

    @rule(target=subscribed, pick=picks,
          rooms=st.lists(st.sampled_from(LIKELY), min_size=1, max_size=3),
          filters=filters, presence=st.booleans(), since=sinces)
    def subscribe(self, pick: int, rooms: list[str],
                  filters: tuple[list[str] | None, dict[str, Any] | None], presence: bool,
                  since: dict[str, tuple[int, str]]) -> Any:
        conn, cmd_id = self.conn(pick), next(self.ids)
        user = self.user[conn]
        events, where = filters
        since = {room: self.position(room, back, epoch) for room, (back, epoch) in since.items()}
        frame: dict[str, Any] = {"type": "subscribe", "id": cmd_id, "rooms": rooms,
                                 "presence": presence}
        if events is not None:
            frame["events"] = events
        if where is not None:
            frame["where"] = where
        if since:
            frame["since"] = {r: {"offset": o, "epoch": e} for r, (o, e) in since.items()}
        self.router.command(conn, frame)

        results: dict[str, dict[str, Any]] = {}
        accepted: list[tuple[str, bool]] = []
        mine = self.subs[conn]
        for room in dict.fromkeys(rooms):
            if room not in VALID:
                results[room] = {"ok": False, "error": "bad_room"}
            elif room not in READ[user]:
                results[room] = {"ok": False, "error": "forbidden"}
            elif room not in mine and len(mine) >= self.max_subscriptions:
                results[room] = {"ok": False, "error": "too_many_subscriptions"}
                note("subscribe: too_many_subscriptions")
            else:
                accepted.append((room, room not in mine))
                mine[room] = MSub(events, where or None, presence)
        replay: list[dict[str, Any]] = []
        for room, _ in accepted:
            log = self.room(room)
            top = len(log.messages)
            entry: dict[str, Any] = {"ok": True, "offset": top, "epoch": log.epoch}
            if room in since:
                offset, epoch = since[room]
                held = self.held(log)
                if epoch != log.epoch or offset > top:
                    entry["recovered"] = False
                else:
                    lost = [m.offset for m in log.messages
                            if m.offset > offset and m not in held]
                    entry["recovered"] = not lost
                    if lost:
                        entry["missed"] = {"from": lost[0], "to": lost[-1]}
                        note("subscribe: recovery with a missed range")
                    elif offset < top:
                        note("subscribe: recovered messages")
                    # what a subscription recovers passes its filters, as live delivery
                    replay += [m.frame for m in held if m.offset > offset
                               and mine[room].admits(m.frame["event"], m.frame["data"])]
            results[room] = entry
        self.expect(conn, {"type": "subscribed", "id": cmd_id,
                           "rooms": {room: results[room] for room in dict.fromkeys(rooms)}})
        self.expected[conn] += replay
        for room, is_new in accepted:
            if is_new and self.count(room, user) == 1:
                self.presence_event(room, user, joined=True)
        self.pending_since[conn] = since
        return multiple(*(room for room, _ in accepted))

    @rule(pick=picks, rooms=st.lists(st.sampled_from(LIKELY), min_size=1, max_size=2))
    def unsubscribe(self, pick: int, rooms: list[str]) -> None:
        conn, cmd_id = self.conn(pick), next(self.ids)
        user = self.user[conn]
        self.router.command(conn, {"type": "unsubscribe", "id": cmd_id, "rooms": rooms})
        unique = list(dict.fromkeys(rooms))
        self.expect(conn, {"type": "unsubscribed", "id": cmd_id, "rooms": unique})
        for room in unique:
            if self.subs[conn].pop(room, None) is not None and self.count(room, user) == 0:
                self.presence_event(room, user, joined=False)

    @rule(pick=picks, room=subscribed | st.sampled_from(LIKELY), event=st.none() | event_names,
          data=payloads, key=st.sampled_from([None, None, "k1", "k2"]))
    def publish(self, pick: int, room: str, event: str | None, data: Any,
                key: str | None) -> None:
        conn, cmd_id = self.conn(pick), next(self.ids)
        user = self.user[conn]
        frame: dict[str, Any] = {"type": "publish", "id": cmd_id, "room": room, "data": data}
        if event is not None:
            frame["event"] = event
        if key is not None:
            frame["idempotency_key"] = key
        self.router.command(conn, frame)
        if room not in VALID:
            return self.error(conn, "bad_room", cmd_id)
        if room not in WRITE[user]:
            return self.error(conn, "forbidden", cmd_id)
        log = self.room(room)
        first = log.keys.get(key) if key is not None else None
        if first is not None and self.now - first[1] < self.window:
            note("publish: duplicate idempotency key")
            return self.expect(conn, {"type": "published", "id": cmd_id, "room": room,
                                      "offset": first[0], "epoch": log.epoch,
                                      "duplicate": True})
        offset = len(log.messages) + 1
        message = {"type": "message", "room": room, "offset": offset, "event": event,
                   "data": data, "sender": user, "ts": p.iso_time(TS_BASE + self.now)}
        log.messages.append(MMessage(offset, self.now, message))
        if key is not None:
            log.keys[key] = (offset, self.now)
        for c in self.live:
            sub = self.subs[c].get(room)
            if sub is not None and sub.admits(event, data):
                self.expect(c, message)
                note(f"publish: delivered ({'filtered' if sub.events or sub.where else 'plain'})")
            elif sub is not None:
                note("publish: a filter held a message back")
        self.expect(conn, {"type": "published", "id": cmd_id, "room": room, "offset": offset,
                           "epoch": log.epoch})

    @precondition(lambda self: any(self.subs[c] for c in self.live))
    @rule(pick=picks, which=picks, event=st.none() | event_names, data=payloads)
    def publish_where_someone_listens(self, pick: int, which: int, event: str | None,
                                      data: Any) -> None:
        """A publish into a room somebody is subscribed to (the interesting case)."""
        rooms = sorted({room for c in self.live for room in self.subs[c]})
        self.publish(pick, rooms[which % len(rooms)], event, data, None)

    @rule(pick=picks, room=st.sampled_from(LIKELY), since=st.none() | st.integers(0, 12),
          limit=st.integers(1, 5))
    def history(self, pick: int, room: str, since: int | None, limit: int) -> None:
        conn, cmd_id = self.conn(pick), next(self.ids)
        frame: dict[str, Any] = {"type": "history", "id": cmd_id, "room": room, "limit": limit}
        if since is not None:
            frame["since"] = since
        self.router.command(conn, frame)
        if room not in VALID:
            return self.error(conn, "bad_room", cmd_id)
        if room not in READ[self.user[conn]]:
            return self.error(conn, "forbidden", cmd_id)
        log = self.room(room)
        held = self.held(log)
        page = held[-limit:] if since is None else [m for m in held if m.offset > since][:limit]
        self.expect(conn, {"type": "history", "id": cmd_id, "room": room, "epoch": log.epoch,
                           "offset": len(log.messages), "messages": [m.frame for m in page]})

    @rule(pick=picks, room=st.sampled_from(LIKELY))
    def presence(self, pick: int, room: str) -> None:
        conn, cmd_id = self.conn(pick), next(self.ids)
        self.router.command(conn, {"type": "presence", "id": cmd_id, "room": room})
        if room not in VALID:
            return self.error(conn, "bad_room", cmd_id)
        if room not in READ[self.user[conn]]:
            return self.error(conn, "forbidden", cmd_id)
        users = sorted({self.user[c] for c in self.live if room in self.subs[c]})
        self.expect(conn, {"type": "presence", "id": cmd_id, "room": room, "users": [
            {"user_id": u, "connections": self.count(room, u), "info": INFO[u]} for u in users
        ]})

    @rule(dt=quarters, prune=st.booleans())
    def advance(self, dt: float, prune: bool) -> None:
        """Time passes, and maybe the backplane's periodic prune runs."""
        self.now += dt
        self.router.now = self.now
        if prune:
            self.prune()

    def prune(self) -> None:
        """Rooms with nothing held, no live idempotency key, quiet for ttl seconds and no
        subscriber here are forgotten (the next use starts a new epoch at offset 1)."""
        self.router.prune()
        watched = {room for c in self.live for room in self.subs[c]}
        for name, log in list(self.rooms.items()):
            last = log.messages[-1].time if log.messages else log.created
            keys_live = any(self.now - t < self.window for _, t in log.keys.values())
            if (name not in watched and not self.held(log) and not keys_live
                    and self.now - last >= self.ttl):
                del self.rooms[name]
                note("prune: a room was forgotten")

    # ------------------------------------------------------------ checks
    def check_outbox(self, conn: int) -> None:
        """The frames the router queued for `conn` are exactly the model's, in order."""
        got = [json.loads(frame) for frame in self.router.outbox[conn]]
        for frame in got:
            self.observe(conn, frame)
            if frame["type"] == "error":
                assert isinstance(frame.pop("message"), str) and frame
            if frame["type"] == "presence":
                frame["users"].sort(key=lambda u: u["user_id"])
        assert got == self.expected[conn], f"connection {conn} ({self.user[conn]})"
        self.router.outbox[conn].clear()
        self.expected[conn].clear()

    def observe(self, conn: int, frame: dict[str, Any]) -> None:
        """Stream properties, independent of the model's exact prediction."""
        streams = self.streams[conn]
        if frame["type"] == "subscribed":
            since = self.pending_since.get(conn, {})
            for room, entry in frame["rooms"].items():
                if not entry["ok"]:
                    continue
                start = entry["offset"]
                if entry.get("recovered"):
                    start = since[room][0]
                elif "missed" in entry:
                    start = entry["missed"]["to"]
                sub = self.subs[conn].get(room)
                plain = sub is None or (sub.events is None and not sub.where)
                streams[room] = Stream(start, plain)
        elif frame["type"] == "unsubscribed":
            for room in frame["rooms"]:
                streams.pop(room, None)
        elif frame["type"] == "message":
            room, offset = frame["room"], frame["offset"]
            assert room in READ[self.user[conn]], f"{room} delivered to {self.user[conn]}"
            stream = streams.get(room)
            assert stream is not None, f"{room} delivered to connection {conn} not in it"
            assert offset > stream.last, f"{room}: offset {offset} after {stream.last}"
            if stream.contiguous:
                assert offset == stream.last + 1, f"{room}: gap {stream.last} -> {offset}"
            stream.last = offset

    @invariant()
    def every_connection_got_exactly_what_the_model_predicts(self) -> None:
        for conn in self.live:
            self.check_outbox(conn)

    @invariant()
    def offsets_per_room_are_contiguous_and_presence_counts_agree(self) -> None:
        if not hasattr(self, "router"):
            return
        for name, log in self.rooms.items():
            real = self.router.store.get(name)
            assert real is not None and real.epoch == log.epoch, name
            assert real.offset == len(log.messages)
            assert [m.offset for m in log.messages] == list(range(1, real.offset + 1))
        assert len(self.router.store) == len(self.rooms)
        for room in ROOMS:
            counts = {u: e.connections for u, e in self.router.table.presence(room).items()}
            users = {self.user[c] for c in self.live if room in self.subs[c]}
            assert counts == {u: self.count(room, u) for u in users}, room


TestRouterModel = RouterModel.TestCase
TestRouterModel.settings = settings(TestRouterModel.settings, stateful_step_count=40)
