"""The oracle: what a correct server may answer to each frame one fuzz client sends, and
whether the messages and presence events pushed to it are ones it may receive."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from roomcast.codes import CloseCode
from roomcast.fuzz.contract import (
    DEEP,
    DEEP_FRAME,
    EITHER,
    ERROR_CODES,
    GRANTS,
    INVALID,
    MISSING,
    REPLY_TYPES,
    ROOM_RE,
    VALID,
    glob,
    id_verdict,
    integer,
    json_equal,
    nesting,
    reject_constant,
    schema,
    short,
    surrogates,
    utf8,
)
from roomcast.fuzz.examples import Frame, Text, Writer


class Issuer(Protocol):
    """What a Session needs from its fuzzer (roomcast.fuzz.fuzzer.Fuzzer): the control
    room's name and the tokens for `refresh`."""

    @property
    def control_room(self) -> str: ...

    def token_variant(self, sub: str, grant: str, variant: str) -> str: ...


@dataclass
class Filter:
    """A subscription's filters as the client asked for them."""

    events: list[Any] | None
    where: dict[str, Any] | None
    presence: bool

    def admits(self, event: Any, data: Any) -> bool:
        if self.events is not None and event not in self.events:
            return False
        if not self.where:
            return True
        return isinstance(data, dict) and all(
            key in data and json_equal(data[key], value) for key, value in self.where.items()
        )


@dataclass
class Expect:
    """What the server may answer to one frame."""

    ids: list[Any]  # acceptable reply ids
    kinds: set[str]  # acceptable reply types ("error" among them when errors are allowed)
    codes: set[str]  # acceptable error codes, beyond ALWAYS_ACCEPTABLE
    check: Callable[[dict[str, Any]], str | None] | None = None  # on a non-error reply
    track: Callable[[dict[str, Any]], None] | None = None  # state change on that reply
    closes: frozenset[int] = frozenset()  # close codes acceptable instead of a reply
    close_only: bool = False  # the server must close (no reply)

    def union(self, other: Expect) -> Expect:
        ids = self.ids + [i for i in other.ids if not any(same_id(i, j) for j in self.ids)]
        return Expect(ids, self.kinds | other.kinds, self.codes | other.codes,
                      self.check or other.check, self.track or other.track,
                      self.closes | other.closes, self.close_only and other.close_only)


ANY_ID: Final = object()  # for frames too deep to read the id from


def same_id(a: Any, b: Any) -> bool:
    return b is ANY_ID or (type(a) is type(b) and a == b)


class Session:
    """One fuzz client's view: its grants, subscriptions, tokens and what it has seen."""

    def __init__(self, fuzzer: Issuer, sub: str, grant: str) -> None:
        self.fuzzer = fuzzer
        self.sub = sub
        self.grant = grant
        claims = GRANTS[grant]
        self.read = claims.get("rooms", [f"user:{sub}"])
        self.write = claims.get("publish", [])
        self.limit = 1_048_576
        self.subs: dict[str, Filter] = {}
        self.last: dict[str, int] = {}
        self.epoch = "e-0"
        self.serial = 0
        self.binary_sent = 0
        self.rate_limited = False
        self.burst = False
        self.valid_tokens: set[str] = set()
        self.log: list[str] = []

    # ------------------------------------------------------------ permissions (§2)
    def can_read(self, room: str) -> bool:
        return room == f"user:{self.sub}" or any(glob(p, room) for p in self.read)

    def can_write(self, room: str) -> bool:
        return any(glob(p, room) for p in self.write)

    # ------------------------------------------------------------ rendering
    def resolve(self, text: str, command_id: Any) -> Any:
        """Markers in drawn values become this client's ids, rooms and tokens."""
        if not text.startswith("$"):
            return text
        if text == "$id":
            return command_id
        if text == "$me":
            return f"user:{self.sub}"
        if text == "$ctl":
            return self.fuzzer.control_room
        if text == "$epoch":
            return self.epoch
        if text.startswith("$token:"):
            token = self.fuzzer.token_variant(self.sub, self.grant, text[7:])
            if text == "$token:valid":
                self.valid_tokens.add(token)
            return token
        return text

    def render(self, frame: Frame) -> tuple[int, bytes]:
        """The frame's opcode and payload, with markers resolved ("$id": a fresh id)."""
        self.serial += 1
        command_id = f"f{self.serial}"
        if isinstance(frame.body, Text):
            text = frame.body.text
        else:
            writer = Writer(self, command_id, frame.spaced, frame.ascii)
            text = writer.dump(frame.body)
            if writer.big is not None:
                base = len(text.encode())
                unit = len(writer.big.fill.encode())
                writer.fill = max(self.limit + writer.big.over - base, 0) // unit
                text = writer.dump(frame.body)
                if unit > 1 and writer.big.over > 0:  # the rounding must not undo "over"
                    while len(text.encode()) <= self.limit:
                        writer.fill += 1
                        text = writer.dump(frame.body)
        if frame.cut is not None and frame.corrupt is None:
            text = text[: int(len(text) * frame.cut)]
        payload = text.encode("utf-8", "surrogatepass")
        if frame.corrupt is not None:
            at = int(len(payload) * (frame.cut or 0.5))
            payload = payload[:at] + frame.corrupt + payload[at:]
        return (0x2 if frame.binary else 0x1), payload

    # ------------------------------------------------------------ the oracle
    def expect(self, opcode: int, payload: bytes) -> Expect:
        """What the contract allows as the answer to this frame (judged from its bytes)."""
        if len(payload) > self.limit:
            closes = {CloseCode.TOO_BIG}
            if opcode == 0x1 and not utf8(payload):
                closes.add(CloseCode.INVALID_DATA)
            return Expect([], set(), set(), closes=frozenset(closes), close_only=True)
        if opcode == 0x2:
            return Expect([None], {"error"}, {"bad_request"},
                          closes=frozenset({CloseCode.PROTOCOL_VIOLATION}))
        if not utf8(payload):
            return Expect([], set(), set(), closes=frozenset({CloseCode.INVALID_DATA}),
                          close_only=True)
        text = payload.decode()
        try:
            value = json.loads(text, parse_constant=reject_constant)
        except RecursionError:  # too deep for us: any answer, as long as there is one
            return Expect([ANY_ID], set(REPLY_TYPES), set(ERROR_CODES))
        except ValueError:
            return Expect([None], {"error"}, {"bad_json"})
        try:
            answer = self._object(value)
        except RecursionError:
            return Expect([ANY_ID], set(REPLY_TYPES), set(ERROR_CODES))
        if nesting(text) >= DEEP:  # a server may refuse such depth, or take it
            answer = answer.union(Expect([None], {"error"}, {"bad_request", "bad_json"}))
        return answer

    def _object(self, value: Any) -> Expect:
        if surrogates(value):  # escaped lone surrogates: JSON by grammar, not Unicode
            return Expect([ANY_ID], set(REPLY_TYPES), set(ERROR_CODES))
        if not isinstance(value, dict):
            return Expect([None], {"error"}, {"bad_request"})
        raw_id = value.get("id")
        verdict = id_verdict(raw_id)
        if verdict == INVALID:
            return Expect([None], {"error"}, {"bad_request", "unknown_type"})
        answer = self._command(value, raw_id)
        if verdict == EITHER:
            answer = answer.union(Expect([None], {"error"}, {"bad_request", "unknown_type"}))
        return answer

    def _command(self, command: dict[str, Any], reply_id: Any) -> Expect:
        kind = command.get("type", MISSING)
        if not isinstance(kind, str):
            return Expect([reply_id], {"error"}, {"bad_request"})
        if kind not in ("subscribe", "unsubscribe", "publish", "history", "presence",
                        "refresh", "ping"):
            return Expect([reply_id], {"error"}, {"unknown_type"})
        verdict = schema(command)
        refused = Expect([reply_id], {"error"}, {"bad_request"})
        if verdict == INVALID:
            return refused
        answer = getattr(self, "_" + kind)(command, reply_id)
        assert isinstance(answer, Expect)
        return answer.union(refused) if verdict == EITHER else answer

    def _room_errors(self, room: Any, read: bool) -> set[str] | None:
        """The error codes a command on `room` must get, or None when it may succeed."""
        if not isinstance(room, str) or ROOM_RE.fullmatch(room) is None:
            return {"bad_room", "forbidden"}
        allowed = self.can_read(room) if read else self.can_write(room)
        return None if allowed else {"forbidden"}

    def _subscribe(self, command: dict[str, Any], reply_id: Any) -> Expect:
        rooms: list[str] = command["rooms"]
        since = command.get("since") or {}
        filters = Filter(command.get("events"), command.get("where") or None,
                         command.get("presence") is True)

        def check(reply: dict[str, Any]) -> str | None:
            entries = reply.get("rooms")
            if not isinstance(entries, dict) or set(entries) != set(rooms):
                return f"`subscribed` must have one entry per requested room {sorted(set(rooms))}"
            for room, entry in entries.items():
                if not isinstance(entry, dict) or not isinstance(entry.get("ok"), bool):
                    return f"entry for {room!r} needs a boolean `ok`"
                errors = self._room_errors(room, read=True)
                if entry["ok"]:
                    if errors is not None:
                        return f"subscribing to {room!r} succeeded; expected {sorted(errors)}"
                    if integer(entry.get("offset"), 0) != VALID:
                        return f"entry for {room!r} needs an integer offset >= 0"
                    if not isinstance(entry.get("epoch"), str):
                        return f"entry for {room!r} needs a string epoch"
                    if room in since and not isinstance(entry.get("recovered"), bool):
                        return f"entry for {room!r} (with since) needs `recovered`"
                    missed = entry.get("missed")
                    if missed is not None and not (
                        isinstance(missed, dict) and integer(missed.get("from"), 0) == VALID
                        and integer(missed.get("to"), 0) == VALID
                        and missed["from"] <= missed["to"]
                    ):
                        return f"entry for {room!r} has a malformed `missed` {missed!r}"
                else:
                    allowed = errors or {"too_many_subscriptions", "unavailable"}
                    if entry.get("error") not in allowed:
                        return f"entry for {room!r} has error {entry.get('error')!r}, " \
                               f"expected one of {sorted(allowed)}"
            return None

        def track(reply: dict[str, Any]) -> None:
            for room, entry in reply["rooms"].items():
                if not entry["ok"]:
                    continue
                self.subs[room] = filters
                self.epoch = entry["epoch"]
                start = entry["offset"]
                position = since.get(room)
                if isinstance(position, dict) and isinstance(position.get("offset"), int):
                    if entry.get("recovered"):
                        start = position["offset"]
                    elif isinstance(entry.get("missed"), dict):
                        start = entry["missed"]["to"]
                self.last[room] = start

        return Expect([reply_id], {"subscribed"}, set(), check, track)

    def _unsubscribe(self, command: dict[str, Any], reply_id: Any) -> Expect:
        rooms: list[str] = command["rooms"]

        def check(reply: dict[str, Any]) -> str | None:
            listed = reply.get("rooms")
            if not isinstance(listed, list) or set(listed) != set(rooms):
                return f"`unsubscribed` must list the requested rooms {sorted(set(rooms))}"
            return None

        def track(reply: dict[str, Any]) -> None:
            for room in rooms:
                self.subs.pop(room, None)

        return Expect([reply_id], {"unsubscribed"}, set(), check, track)

    def _publish(self, command: dict[str, Any], reply_id: Any) -> Expect:
        room = command["room"]
        errors = self._room_errors(room, read=False)
        if errors is not None:
            return Expect([reply_id], {"error"}, errors)

        def check(reply: dict[str, Any]) -> str | None:
            if reply.get("room") != room or integer(reply.get("offset"), 1) != VALID:
                return "`published` needs the room and an integer offset >= 1"
            if reply.get("duplicate", True) is not True:
                return "`duplicate` is only ever true"
            return None

        return Expect([reply_id], {"published"}, set(), check)

    def _history(self, command: dict[str, Any], reply_id: Any) -> Expect:
        room = command["room"]
        errors = self._room_errors(room, read=True)
        if errors is not None:
            return Expect([reply_id], {"error"}, errors)
        since = command.get("since")
        limit = command.get("limit") or 100

        def check(reply: dict[str, Any]) -> str | None:
            messages = reply.get("messages")
            if reply.get("room") != room or not isinstance(reply.get("epoch"), str):
                return "`history` needs the room and an epoch"
            if integer(reply.get("offset"), 0) != VALID or not isinstance(messages, list):
                return "`history` needs an integer offset and a list of messages"
            if len(messages) > limit:
                return f"`history` returned {len(messages)} messages, limit {limit}"
            if any(not isinstance(m, dict) or m.get("room") != room or m.get("type") != "message"
                   or integer(m.get("offset"), 1) != VALID for m in messages):
                return "history messages must be `message` frames of the room, with offsets"
            offsets: list[int] = [m["offset"] for m in messages]
            if offsets != sorted(set(offsets)) or any(o > reply["offset"] for o in offsets):
                return f"history offsets {offsets} are not increasing up to the room's offset"
            if isinstance(since, int) and any(o <= since for o in offsets):
                return f"history after {since} returned offsets {offsets}"
            return None

        return Expect([reply_id], {"history"}, set(), check)

    def _presence(self, command: dict[str, Any], reply_id: Any) -> Expect:
        room = command["room"]
        errors = self._room_errors(room, read=True)
        if errors is not None:
            return Expect([reply_id], {"error"}, errors)

        def check(reply: dict[str, Any]) -> str | None:
            users = reply.get("users")
            if reply.get("room") != room or not isinstance(users, list):
                return "`presence` needs the room and a list of users"
            for user in users:
                if not (isinstance(user, dict) and isinstance(user.get("user_id"), str)
                        and integer(user.get("connections"), 1) == VALID
                        and isinstance(user.get("info"), dict)):
                    return f"malformed presence entry {user!r}"
            return None

        return Expect([reply_id], {"presence"}, set(), check)

    def _refresh(self, command: dict[str, Any], reply_id: Any) -> Expect:
        if command["token"] in self.valid_tokens:
            return Expect([reply_id], {"refreshed"}, set(),
                          lambda r: None if isinstance(r.get("expires_at"), str)
                          else "`refreshed` needs expires_at")
        return Expect([reply_id], {"error"}, {"forbidden"})

    def _ping(self, command: dict[str, Any], reply_id: Any) -> Expect:
        return Expect([reply_id], {"pong"}, set(),
                      lambda r: None if isinstance(r.get("server_time"), str)
                      else "`pong` needs server_time")

    # ------------------------------------------------------------ pushed frames
    def observe(self, frame: dict[str, Any]) -> str | None:
        """Check a message or presence event against what this client subscribed to."""
        kind, room = frame.get("type"), frame.get("room")
        if not isinstance(room, str):
            return f"{kind} frame without a room: {short(frame)}"
        if not self.can_read(room):
            return f"{kind} for {room!r}, which this client may not read"
        sub = self.subs.get(room)
        if sub is None:
            return f"{kind} for {room!r}, which this client is not subscribed to"
        if kind in ("joined", "left"):
            if not sub.presence:
                return f"{kind} for {room!r}, subscribed without presence"
            return None if isinstance(frame.get("user_id"), str) else f"{kind} needs user_id"
        offset = frame.get("offset")
        if not isinstance(offset, int) or integer(offset, 1) != VALID:
            return f"message needs an integer offset >= 1: {short(frame)}"
        if offset <= self.last.get(room, 0):
            return f"{room!r}: offset {offset} after {self.last.get(room)} (order or duplicate)"
        self.last[room] = offset
        if not all(k in frame for k in ("event", "data", "sender", "ts")):
            if frame.get(DEEP_FRAME) and "data" not in frame:
                return None  # too deep for us to read its data: the filter cannot be checked
            return f"message lacks event/data/sender/ts: {short(frame)}"
        try:
            admitted = sub.admits(frame["event"], frame["data"])
        except RecursionError:
            return None
        if not admitted:
            return f"message in {room!r} that the subscription's filters exclude: {short(frame)}"
        return None

