"""`roomcast fuzz`: a property-based protocol fuzzer for any server that speaks the contract.

Several real WebSocket clients send hypothesis-made frames — valid commands, mutated ones,
wrong field types, odd ids, invalid UTF-8, binary frames, deep or huge JSON, random text —
while two control clients keep a steady stream of messages going through the server. The
fuzzer checks, frame by frame, what the contract promises: exactly one reply with the right
id (or a close code the contract allows for what was sent), deliveries only from rooms a
client subscribed to and may read, filters honoured, offsets increasing; and that the
control stream never stalls, skips or closes. See docs/fuzzing.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import math
import os
import re
import struct
import sys
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final
from urllib.parse import quote, urlsplit

import jwt
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

try:
    import hypothesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        "roomcast fuzz needs hypothesis: pip install 'roomcast[test]' (or pip install hypothesis)"
    ) from exc

# ---------------------------------------------------------------- what the contract says
REPLY_TYPES: Final = frozenset({"subscribed", "unsubscribed", "published", "history",
                                "presence", "refreshed", "pong", "error"})
ERROR_CODES: Final = frozenset({"bad_json", "bad_request", "unknown_type", "bad_room",
                                "forbidden", "not_subscribed", "rate_limited",
                                "too_many_subscriptions", "internal"})
# Always acceptable instead of a reply: the rate limit (§6), and a cluster backplane outage.
ALWAYS_ACCEPTABLE: Final = frozenset({"rate_limited", "unavailable"})
ROOM_RE: Final = re.compile(r"[A-Za-z0-9_\-:.@/]{1,200}")
MAX_ID_CHARS: Final = 64
DEEP: Final = 256  # nesting beyond which a parser may refuse a frame (either answer is fine)
INVALID_UTF8: Final = 1007
TOO_BIG: Final = 1009
PROTOCOL_VIOLATION: Final = 4400
TOO_MANY: Final = 4429
GRANTS: Final[dict[str, dict[str, list[str]]]] = {
    "full": {"rooms": ["fuzz:*", "fuzzctl:*"], "publish": ["fuzz:*"]},
    "narrow": {"rooms": ["fuzz:a"], "publish": []},
    "none": {},  # no claims: only the personal room (the default `default_rooms`)
}


class FuzzFailure(AssertionError):
    """The server did something the contract does not allow."""


# ---------------------------------------------------------------- what an example is
@dataclass(frozen=True)
class Lit:
    """A JSON literal sent exactly as written (numbers Python would not write this way)."""

    text: str


@dataclass(frozen=True)
class Deep:
    """`depth` nested arrays (or objects), built when sent: too big to draw."""

    depth: int
    objects: bool = False


@dataclass(frozen=True)
class Big:
    """A string that makes the whole frame `over` bytes longer than the server's limit
    (negative: shorter), written with `fill` (multi-byte fills count bytes, not characters)."""

    over: int
    fill: str = "x"


@dataclass(frozen=True)
class Text:
    """A text frame sent verbatim, whatever it is."""

    text: str


class _Drop:
    """A field value meaning "leave this field out"."""

    def __repr__(self) -> str:
        return "DROP"


DROP: Final = _Drop()


@dataclass(frozen=True)
class Frame:
    """One data frame: a JSON-ish body (or Text), and how to mangle it on the way out."""

    body: Any
    spaced: bool = False
    ascii: bool = True
    cut: float | None = None  # send only this leading fraction of the text
    corrupt: bytes | None = None  # splice in these bytes: a text frame that is not UTF-8
    binary: bool = False
    fragments: int = 1


@dataclass(frozen=True)
class ClientPing:
    """A WebSocket ping control frame; the server must answer with the same payload."""

    payload: bytes


@dataclass(frozen=True)
class Burst:
    """`count` ping commands sent back to back, to hit the rate limit."""

    count: int


Action = Frame | ClientPing | Burst


@dataclass(frozen=True)
class Script:
    """What one fuzz client does: its token's grant, then its actions in order."""

    grant: str
    actions: tuple[Action, ...]


Example = tuple[Script, ...]

# ---------------------------------------------------------------- strategies
_EVENT_NAMES = st.sampled_from(["a", "b", "c.d", "task.created"])
_ODD_TEXT = st.sampled_from(["", "\u0000", "\u2028", "\U0001f600", "\\", '"', "é" * 31,
                             "é" * 32, "a" * 62, "a" * 63, "a" * 64, "a" * 65, "$me"])
_TEXT = st.text(max_size=12) | _ODD_TEXT
_ODD_NUMBERS = st.sampled_from([Lit(t) for t in (
    "1e400", "-1e400", "1E2", "1e-400", "123456789012345678901234567890", "-0", "1.0",
    "-0.0", "0e0", "1" + "0" * 62, "1" + "0" * 63, "1" + "0" * 64, "9223372036854775808",
)])
_SCALARS = (st.none() | st.booleans() | st.integers() | _TEXT | _ODD_NUMBERS
            | st.floats(allow_nan=False, allow_infinity=False))
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_DEEP = st.builds(Deep, st.sampled_from([3, 64, 255, 256, 500, 999, 1000, 2000, 10_000,
                                         100_000]), st.booleans())
_SMALL_DEEP = st.builds(Deep, st.sampled_from([3, 255, 256, 500, 999, 1000, 2000]),
                        st.booleans())
_BIG = st.builds(Big, st.sampled_from([-64, -1, 0, 1, 4096]), st.sampled_from(["x", "é", "€"]))
_ROOMS = st.sampled_from(
    ["fuzz:a"] * 4 + ["fuzz:b"] * 2
    + ["fuzz:c", "$ctl", "$me", "secret:1", "user:nobody", "", "bad room", "x" * 201, "é",
       "fuzz:*", "A" * 200, "@/.-_:", "fuzz:" + "z" * 195, "fuzz:" + "z" * 196]
)
def _weighted(*choices: tuple[int, Any]) -> Any:
    """one_of with integer weights (hypothesis merges repeats of one strategy in one_of, so
    each repeat is a distinct copy)."""
    return st.one_of(*[s.map(_same) for weight, s in choices for _ in range(weight)])


def _same(value: Any) -> Any:
    return value


_ODD_IDS = (st.just(DROP) | st.integers() | _ODD_NUMBERS | _TEXT | st.floats(allow_nan=False)
            | st.booleans() | st.none() | st.lists(st.integers(), max_size=2)
            | st.builds(Deep, st.sampled_from([2, 300])))
_IDS = _weighted((6, st.just("$id")), (1, _ODD_IDS))
_WHERE = (st.fixed_dictionaries({"k": st.sampled_from([1, "a", True, None, 1.0])})
          | st.dictionaries(st.sampled_from(["k", "n"]), _VALUES, max_size=2))
_SINCE = st.dictionaries(_ROOMS, st.fixed_dictionaries({
    "offset": st.integers(0, 8) | st.integers() | _ODD_NUMBERS,
    "epoch": st.just("$epoch") | _TEXT,
}), max_size=2)
_TOKENS = st.sampled_from(["$token:valid", "$token:other", "$token:badsig", "$token:expired",
                           "$token:none", "$token:garbage", ""])


def _command(kind: str, required: dict[str, Any], optional: dict[str, Any]) -> Any:
    return st.fixed_dictionaries(
        {"type": st.just(kind), "id": _IDS, **required}, optional=optional
    )


_COMMANDS = st.one_of(
    _command("subscribe", {"rooms": st.lists(_ROOMS, min_size=1, max_size=4)},
             {"events": st.none() | st.lists(_EVENT_NAMES, max_size=3), "where": _WHERE,
              "since": _SINCE, "presence": st.booleans()}),
    _command("unsubscribe", {"rooms": st.lists(_ROOMS, min_size=1, max_size=3)}, {}),
    _command("publish", {"room": _ROOMS},
             {"event": st.none() | _EVENT_NAMES, "data": _VALUES | _SMALL_DEEP,
              "idempotency_key": st.sampled_from(["k1", "k2"]) | _TEXT}),
    _command("publish", {"room": st.just("fuzz:a"), "data": _WHERE}, {"event": _EVENT_NAMES}),
    _command("history", {"room": _ROOMS},
             {"since": st.integers(0, 10) | st.integers() | _ODD_NUMBERS,
              "limit": st.integers(0, 1001) | st.sampled_from([1, 1000, 1001, 0])}),
    _command("presence", {"room": _ROOMS}, {}),
    _command("refresh", {"token": _TOKENS}, {}),
    _command("ping", {}, {"extra": _VALUES}),
)
_FIELDS = st.sampled_from(["type", "id", "rooms", "room", "events", "where", "since",
                           "presence", "event", "data", "idempotency_key", "limit", "token"])
_KINDS = st.sampled_from(["subscribe", "unsubscribe", "publish", "history", "presence",
                          "refresh", "ping", "Ping", "subscribed", "connected"])


@st.composite
def _mutated(draw: Any) -> Any:
    """A valid command with one to three things wrong with it."""
    command = dict(draw(_COMMANDS))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "set", "retype", "add", "wrap"]))
        keys = sorted(command)
        if op == "drop" and keys:
            del command[draw(st.sampled_from(keys))]
        elif op == "set" and keys:
            command[draw(st.sampled_from(keys))] = draw(_VALUES | _SMALL_DEEP)
        elif op == "retype":
            command["type"] = draw(_KINDS | _TEXT | _VALUES)
        elif op == "add":
            command[draw(_FIELDS | _TEXT)] = draw(_VALUES)
        else:
            return [command]
    return command


_RAW = st.one_of(
    st.builds(Text, st.text(max_size=40)),
    st.builds(Text, st.sampled_from([
        "NaN", "Infinity", "[1,]", "{'type':'ping'}", '\ufeff{"type":"ping"}',
        ' {"type":"ping","id":"ws"}\n', '{"type":"ping"} {"type":"ping"}',
        '{"type":"ping","id":"\\ud800"}', '{"type":"ping","id":"\\u0000"}',
        '{"type":"ping","id":1}\u0000', "", "{}", "[]", "null", '"ping"', '{"type":"ping",}',
        '{"type":"ping"', '{"type":"ping","id":01}', '{"type":"ping","id":-0}',
        '{"type":"ping","id":1e2}', '{"type":null}', '{"type":"ping","type":"ping"}',
    ])),
    _VALUES,
)
_BAD_BYTES = st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\x80",
                              b"\xf8\x88\x80\x80\x80", b"\xf4\x90\x80\x80", b"\xfe\xff"])
# The plain case, often: subscribing to and publishing into the shared rooms, so that the
# clients of one example deliver to each other (filters, offsets, presence get checked).
_JOIN = st.fixed_dictionaries(
    {"type": st.just("subscribe"), "id": st.just("$id"),
     "rooms": st.lists(st.sampled_from(["fuzz:a", "fuzz:b", "$ctl"]), min_size=1, max_size=2)},
    optional={"events": st.lists(_EVENT_NAMES, max_size=2), "where": _WHERE,
              "presence": st.booleans()},
)
_TRAFFIC = _JOIN | st.fixed_dictionaries(
    {"type": st.just("publish"), "id": st.just("$id"),
     "room": st.sampled_from(["fuzz:a", "fuzz:b"]),
     "data": _WHERE | _VALUES | st.fixed_dictionaries({"k": _ODD_NUMBERS | _SCALARS},
                                                      optional={"n": _VALUES})},
    optional={"event": _EVENT_NAMES},
)
# Frames that leave the connection open (most of them) ...
_SURVIVABLE = _weighted(
    (4, st.builds(Frame, _TRAFFIC, spaced=st.booleans(), ascii=st.booleans())),
    (1, st.builds(Frame, _TRAFFIC, fragments=st.integers(2, 4))),
    (2, st.builds(Frame, _COMMANDS, spaced=st.booleans(), ascii=st.booleans())),
    (2, st.builds(Frame, _mutated())),
    (1, st.builds(Frame, _RAW)),
    (1, st.builds(Frame, _COMMANDS, cut=st.floats(0, 1))),
    (1, st.builds(Frame, _SMALL_DEEP
                  | st.fixed_dictionaries({"type": st.just("ping"), "id": _SMALL_DEEP}))),
    (1, st.builds(ClientPing, st.binary(max_size=125))),
)
# ... and frames after which the server may (or must) close it.
_FATAL = st.one_of(
    st.builds(Frame, _COMMANDS, corrupt=_BAD_BYTES, cut=st.floats(0, 1)),
    st.builds(Frame, _COMMANDS | _RAW | _BIG, binary=st.just(True)),
    st.builds(Frame, st.fixed_dictionaries({"type": st.just("publish"), "id": st.just("$id"),
                                            "room": st.just("fuzz:a"), "data": _BIG})),
    st.builds(Frame, _DEEP),
    st.builds(Burst, st.integers(2, 100)),
)
_ACTIONS = _weighted((24, _SURVIVABLE), (1, _FATAL))


def example_strategy(clients: int = 3, actions: int = 12) -> Any:
    """The strategy for one example: 1..clients scripts of 1..actions actions each."""
    script = st.builds(
        Script,
        st.sampled_from(["full", "full", "narrow", "none"]),
        st.builds(lambda joins, rest: tuple(joins + rest),  # subscribe first, most often
                  st.lists(st.builds(Frame, _JOIN), max_size=2),
                  st.lists(_ACTIONS, min_size=1, max_size=actions)),
    )
    return st.lists(script, min_size=1, max_size=clients).map(tuple)


# ---------------------------------------------------------------- JSON as the contract means it
def json_equal(a: Any, b: Any) -> bool:
    """`data[key] == value` as JSON means it: `true` is not `1`, `1` is `1.0`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


def _glob(pattern: str, room: str) -> bool:
    """Shell-style room patterns (§2): `*` any run (`:` included), `?` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, room, re.DOTALL) is not None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_MISSING: Final = object()
VALID, EITHER, INVALID = 0, 1, 2  # how a field stands against the schema; EITHER: the
# contract does not decide (null for an optional field, 1.0 for an integer, ...)


def _nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_nonfinite(v) for v in value)
    if isinstance(value, dict):
        return any(_nonfinite(v) for v in value.values())
    return False


def _surrogates(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, list):
        return any(_surrogates(v) for v in value)
    if isinstance(value, dict):
        return any(_surrogates(k) or _surrogates(v) for k, v in value.items())
    return False


def _nesting(text: str) -> int:
    """How deeply arrays and objects nest in `text` (strings skipped)."""
    if text.count("[") + text.count("{") < DEEP:
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _integer(value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool):
        return INVALID
    if isinstance(value, int):
        if value < low or (high is not None and value > high):
            return INVALID
        return EITHER if abs(value) >= 2**63 else VALID
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        inside = value >= low and (high is None or value <= high)
        return EITHER if inside else INVALID
    return INVALID


def _text(value: Any) -> int:
    return VALID if isinstance(value, str) else INVALID


def _room_list(value: Any) -> int:
    ok = (isinstance(value, list) and 1 <= len(value) <= 100
          and all(isinstance(v, str) for v in value))
    return VALID if ok else INVALID


def _string_list(value: Any) -> int:
    return VALID if isinstance(value, list) and all(isinstance(v, str) for v in value) else INVALID


def _object(value: Any) -> int:
    if not isinstance(value, dict):
        return INVALID
    return EITHER if _nonfinite(value) else VALID


def _since(value: Any) -> int:
    if not isinstance(value, dict):
        return INVALID
    worst = VALID
    for position in value.values():
        if not isinstance(position, dict) or "offset" not in position or "epoch" not in position:
            return INVALID
        worst = max(worst, _integer(position["offset"], 0), _text(position["epoch"]))
    return worst


def _key(value: Any) -> int:
    return VALID if isinstance(value, str) and len(value) <= 64 else INVALID


def _field(command: dict[str, Any], name: str, check: Callable[[Any], int], *,
           required: bool = False, null: int = EITHER) -> int:
    value = command.get(name, _MISSING)
    if value is _MISSING:
        return INVALID if required else VALID
    if value is None:
        return INVALID if required else null
    return check(value)


def schema(command: dict[str, Any]) -> int:
    """VALID, EITHER or INVALID: the command's fields against §4 (unknown fields ignored)."""
    kind = command["type"]
    f = partial(_field, command)
    if kind == "subscribe":
        return max(f("rooms", _room_list, required=True), f("events", _string_list),
                   f("where", _object), f("since", _since),
                   f("presence", lambda v: VALID if isinstance(v, bool) else INVALID))
    if kind == "unsubscribe":
        return f("rooms", _room_list, required=True)
    if kind == "publish":
        return max(f("room", _text, required=True), f("event", _text, null=VALID),
                   f("idempotency_key", _key))
    if kind == "history":
        return max(f("room", _text, required=True), f("since", partial(_integer, low=0)),
                   f("limit", partial(_integer, low=1, high=1000)))
    if kind in ("presence",):
        return f("room", _text, required=True)
    if kind == "refresh":
        return f("token", _text, required=True)
    return VALID  # ping


def _id_verdict(raw: Any) -> int:
    """A string or integer of at most 64 characters as JSON is echoed (§3)."""
    if raw is None:
        return VALID
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
            return EITHER  # 1.0: an integer to JavaScript, a float to Python
        return INVALID
    written = json.dumps(raw, ensure_ascii=False)
    escapes = isinstance(raw, str) and any(c < " " or c in '"\\' for c in raw)
    if escapes and abs(len(written) - MAX_ID_CHARS) <= 6:
        return EITHER  # escapes may be written in more than one way
    return VALID if len(written) <= MAX_ID_CHARS else INVALID


# ---------------------------------------------------------------- expectations
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
        ids = self.ids + [i for i in other.ids if not any(_same_id(i, j) for j in self.ids)]
        return Expect(ids, self.kinds | other.kinds, self.codes | other.codes,
                      self.check or other.check, self.track or other.track,
                      self.closes | other.closes, self.close_only and other.close_only)


ANY_ID: Final = object()  # for frames too deep to read the id from


def _same_id(a: Any, b: Any) -> bool:
    return b is ANY_ID or (type(a) is type(b) and a == b)


class Session:
    """One fuzz client's view: its grants, subscriptions, tokens and what it has seen."""

    def __init__(self, fuzzer: Fuzzer, sub: str, grant: str) -> None:
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
        return room == f"user:{self.sub}" or any(_glob(p, room) for p in self.read)

    def can_write(self, room: str) -> bool:
        return any(_glob(p, room) for p in self.write)

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
            writer = _Writer(self, command_id, frame.spaced, frame.ascii)
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
            closes = {TOO_BIG}
            if opcode == 0x1 and not _utf8(payload):
                closes.add(INVALID_UTF8)
            return Expect([], set(), set(), closes=frozenset(closes), close_only=True)
        if opcode == 0x2:
            return Expect([None], {"error"}, {"bad_request"},
                          closes=frozenset({PROTOCOL_VIOLATION}))
        if not _utf8(payload):
            return Expect([], set(), set(), closes=frozenset({INVALID_UTF8}), close_only=True)
        text = payload.decode()
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except RecursionError:  # too deep for us: any answer, as long as there is one
            return Expect([ANY_ID], set(REPLY_TYPES), set(ERROR_CODES))
        except ValueError:
            return Expect([None], {"error"}, {"bad_json"})
        try:
            answer = self._object(value)
        except RecursionError:
            return Expect([ANY_ID], set(REPLY_TYPES), set(ERROR_CODES))
        if _nesting(text) >= DEEP:  # a server may refuse such depth, or take it
            answer = answer.union(Expect([None], {"error"}, {"bad_request", "bad_json"}))
        return answer

    def _object(self, value: Any) -> Expect:
        if _surrogates(value):  # escaped lone surrogates: JSON by grammar, not Unicode
            return Expect([ANY_ID], set(REPLY_TYPES), set(ERROR_CODES))
        if not isinstance(value, dict):
            return Expect([None], {"error"}, {"bad_request"})
        raw_id = value.get("id")
        verdict = _id_verdict(raw_id)
        if verdict == INVALID:
            return Expect([None], {"error"}, {"bad_request", "unknown_type"})
        answer = self._command(value, raw_id)
        if verdict == EITHER:
            answer = answer.union(Expect([None], {"error"}, {"bad_request", "unknown_type"}))
        return answer

    def _command(self, command: dict[str, Any], reply_id: Any) -> Expect:
        kind = command.get("type", _MISSING)
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
                    if _integer(entry.get("offset"), 0) != VALID:
                        return f"entry for {room!r} needs an integer offset >= 0"
                    if not isinstance(entry.get("epoch"), str):
                        return f"entry for {room!r} needs a string epoch"
                    if room in since and not isinstance(entry.get("recovered"), bool):
                        return f"entry for {room!r} (with since) needs `recovered`"
                    missed = entry.get("missed")
                    if missed is not None and not (
                        isinstance(missed, dict) and _integer(missed.get("from"), 0) == VALID
                        and _integer(missed.get("to"), 0) == VALID
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
            if reply.get("room") != room or _integer(reply.get("offset"), 1) != VALID:
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
            if _integer(reply.get("offset"), 0) != VALID or not isinstance(messages, list):
                return "`history` needs an integer offset and a list of messages"
            if len(messages) > limit:
                return f"`history` returned {len(messages)} messages, limit {limit}"
            if any(not isinstance(m, dict) or m.get("room") != room or m.get("type") != "message"
                   or _integer(m.get("offset"), 1) != VALID for m in messages):
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
                        and _integer(user.get("connections"), 1) == VALID
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
            return f"{kind} frame without a room: {_short(frame)}"
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
        if not isinstance(offset, int) or _integer(offset, 1) != VALID:
            return f"message needs an integer offset >= 1: {_short(frame)}"
        if offset <= self.last.get(room, 0):
            return f"{room!r}: offset {offset} after {self.last.get(room)} (order or duplicate)"
        self.last[room] = offset
        if not all(k in frame for k in ("event", "data", "sender", "ts")):
            if frame.get(DEEP_FRAME) and "data" not in frame:
                return None  # too deep for us to read its data: the filter cannot be checked
            return f"message lacks event/data/sender/ts: {_short(frame)}"
        try:
            admitted = sub.admits(frame["event"], frame["data"])
        except RecursionError:
            return None
        if not admitted:
            return f"message in {room!r} that the subscription's filters exclude: {_short(frame)}"
        return None


DEEP_FRAME: Final = "\x00deep"  # marks a server frame read by _shallow


def _server_frame(text: str) -> Any:
    """A frame from the server as JSON; one nested too deeply for Python (deep data a client
    published) is read shallowly, for its top-level fields."""
    try:
        return json.loads(text)
    except RecursionError:
        frame = _shallow(text)
        frame[DEEP_FRAME] = True
        return frame
    except ValueError:
        raise FuzzFailure(f"the server sent a text frame that is not JSON: {_short(text)}"
                          ) from None


_SCALAR = re.compile(r"-?[0-9][0-9.eE+\-]*|true|false|null")


def _shallow(text: str) -> dict[str, Any]:
    """The top-level scalar fields of a JSON object, without recursion (nested values are
    skipped), for frames too deep for json.loads."""
    out: dict[str, Any] = {}
    depth, i, key, want_value = 0, 0, None, False
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            token = json.loads(text[i:j + 1])
            if depth == 1 and want_value and key is not None:
                out[key], want_value = token, False
            elif depth == 1:
                key = token
            i = j + 1
            continue
        if c in "{[":
            depth += 1
            want_value = want_value and depth == 1
        elif c in "}]":
            depth -= 1
        elif depth == 1 and c == ":":
            want_value = True
        elif depth == 1 and want_value and key is not None and not c.isspace():
            match = _SCALAR.match(text, i)
            if match:
                out[key], want_value = json.loads(match.group()), False
                i = match.end()
                continue
        i += 1
    return out


def _utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


class _Writer:
    """JSON text for a drawn body: markers resolved, Lit/Deep/Big written out."""

    def __init__(self, session: Session, command_id: Any, spaced: bool, ascii: bool) -> None:
        self.session = session
        self.command_id = command_id
        self.comma, self.colon = (", ", ": ") if spaced else (",", ":")
        self.ascii = ascii
        self.big: Big | None = None
        self.fill = 0

    def dump(self, value: Any) -> str:
        if isinstance(value, Lit):
            return value.text
        if isinstance(value, Deep):
            if value.objects:
                return '{"a":' * value.depth + "0" + "}" * value.depth
            return "[" * value.depth + "]" * value.depth
        if isinstance(value, Big):
            self.big = value
            return '"' + value.fill * self.fill + '"'
        if isinstance(value, str):
            value = self.session.resolve(value, self.command_id)
        if isinstance(value, dict):
            items = [(self.dump(str(k)), v) for k, v in value.items() if v is not DROP]
            return "{" + self.comma.join(k + self.colon + self.dump(v) for k, v in items) + "}"
        if isinstance(value, list | tuple):
            return "[" + self.comma.join(self.dump(v) for v in value) + "]"
        return json.dumps(value, ensure_ascii=self.ascii)


# ---------------------------------------------------------------- a raw WebSocket client
@dataclass
class Closed:
    code: int
    reason: str


class RawClient:
    """A WebSocket client on wsproto that can also send what a polite client never would:
    text frames that are not UTF-8, fragments, oversized frames."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: deque[Event] = deque()
        self.parts: list[Any] = []
        self.closed: Closed | None = None
        self.answer_pings = True  # False: hand pings to the caller, unanswered (a dead client)

    async def handshake(self, host: str, target: str) -> None:
        await self.stream.send_all(self.ws.send(Request(host=host, target=target)))
        while True:
            event = await self._event()
            if isinstance(event, AcceptConnection):
                return
            if isinstance(event, RejectConnection):
                raise FuzzFailure(f"the server refused the WebSocket handshake with HTTP "
                                  f"{event.status_code}")

    async def _event(self) -> Event:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(bytes(data) or None)
            self.pending.extend(self.ws.events())
            if not data and not self.pending:
                raise trio.BrokenResourceError("connection closed")
        return self.pending.popleft()

    async def send(self, opcode: int, payload: bytes, fragments: int = 1) -> None:
        """One message as `fragments` masked frames (continuations after the first)."""
        size = max(1, -(-len(payload) // fragments))
        chunks = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
        for n, chunk in enumerate(chunks):
            await self.raw_frame(opcode if n == 0 else 0x0, chunk, fin=n == len(chunks) - 1)

    async def raw_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += struct.pack("!BH", 0x80 | 126, n)
        else:
            head += struct.pack("!BQ", 0x80 | 127, n)
        mask = os.urandom(4)
        key = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
            n, "little")
        await self.stream.send_all(head + mask + masked)

    async def receive(self) -> str | bytes | Closed | Pong | Ping:
        """The next whole data message, a pong, or the close (pings are answered, or
        returned when `answer_pings` is off)."""
        if self.closed is not None:
            return self.closed
        while True:
            try:
                event = await self._event()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.closed = Closed(1006, "the connection dropped without a close frame")
                return self.closed
            if isinstance(event, TextMessage | BytesMessage):
                self.parts.append(event.data)
                if event.message_finished:
                    parts, self.parts = self.parts, []
                    return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
            elif isinstance(event, Ping):
                if not self.answer_pings:
                    return event
                if self.ws.state is ConnectionState.OPEN:  # not while closing
                    await self._send_quietly(self.ws.send(event.response()))
            elif isinstance(event, Pong):
                return event
            elif isinstance(event, CloseConnection):
                self.closed = Closed(event.code, event.reason or "")
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    await self._send_quietly(self.ws.send(event.response()))
                return self.closed

    async def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self.stream.send_all(data)

    async def close(self, timeout: float) -> None:
        """A normal close (1000), waiting briefly for the server's answer."""
        with trio.move_on_after(timeout):
            if self.closed is None and self.ws.state is ConnectionState.OPEN:
                await self._send_quietly(self.ws.send(CloseConnection(code=1000)))
                while not isinstance(await self.receive(), Closed):
                    pass
        await trio.aclose_forcefully(self.stream)


# ---------------------------------------------------------------- the target
@dataclass(frozen=True)
class Target:
    url: str
    secure: bool
    host: str
    port: int
    path: str

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url_with(self, token: str) -> str:
        scheme = "wss" if self.secure else "ws"
        return f"{scheme}://{self.hostport}{self.path}?token={quote(token, safe='')}"


def parse_target(url: str, allow_remote: bool = False) -> Target:
    """Check the URL; refuse anything but a loopback host unless `allow_remote`."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{url!r} is not a ws:// or wss:// URL, e.g. ws://127.0.0.1:8000/ws")
    host = parts.hostname
    if not allow_remote:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ValueError(
                f"refusing to fuzz {host}: the fuzzer sends malformed and abusive traffic, so "
                "only loopback addresses (127.0.0.1, ::1, localhost) are allowed; pass "
                "--allow-remote if you run that server and mean it"
            )
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return Target(url, parts.scheme == "wss", host, port, parts.path or "/")


# ---------------------------------------------------------------- the control clients
class Control:
    """Two clients outside the fuzzing: one publishes a counter into a room the fuzz
    clients may read but not write, the other must receive every value, in order."""

    def __init__(self, fuzzer: Fuzzer) -> None:
        self.fuzzer = fuzzer
        self.failure: str | None = None
        self.published = 0  # highest counter the server acknowledged
        self.received = 0  # highest counter delivered, all before it delivered too
        self.last_offset: int | None = None
        self.pongs: dict[str, trio.Event] = {}
        self.arrived = trio.Event()
        self.sub_ws: trio_websocket.WebSocketConnection | None = None
        self.period = 0.05
        self.pinged_at = -math.inf

    def fail(self, message: str) -> None:
        if self.failure is None:
            self.failure = message
        self.arrived.set()
        for waiting in self.pongs.values():
            waiting.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        fz = self.fuzzer
        timeout = fz.timeout
        sub_url = fz.target.url_with(fz.mint(f"fuzzctl-sub-{fz.run_id}", ["fuzzctl:*"], []))
        pub_url = fz.target.url_with(fz.mint(f"fuzzctl-pub-{fz.run_id}", [], ["fuzzctl:*"]))
        async with (
            trio_websocket.open_websocket_url(sub_url, connect_timeout=timeout,
                                              disconnect_timeout=timeout) as sub,
            trio_websocket.open_websocket_url(pub_url, connect_timeout=timeout,
                                              disconnect_timeout=timeout) as pub,
        ):
            with trio.fail_after(timeout):
                hello = json.loads(await sub.get_message())
                await pub.get_message()
                await sub.send_message(json.dumps({"type": "subscribe", "id": "ctl",
                                                   "rooms": [fz.control_room]}))
                reply = json.loads(await sub.get_message())
            if reply.get("type") != "subscribed" or not reply["rooms"][fz.control_room]["ok"]:
                raise FuzzFailure(f"the control client could not subscribe: {reply!r}")
            self.last_offset = reply["rooms"][fz.control_room]["offset"]
            rate = float(hello.get("limits", {}).get("rate_per_second", 20))
            self.period = max(2.0 / rate, 0.02)  # half the allowed rate
            self.sub_ws = sub
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guarded, self._read, sub)
                nursery.start_soon(self._guarded, self._publish, pub)
                task_status.started()

    async def _guarded(self, task: Callable[[trio_websocket.WebSocketConnection], Any],
                       ws: trio_websocket.WebSocketConnection) -> None:
        """A control task that goes wrong records a failure instead of ending the run."""
        try:
            await task(ws)
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            self.fail(f"the control client got something it cannot read: {exc!r}")

    async def _read(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            try:
                frame = json.loads(await ws.get_message())
            except trio_websocket.ConnectionClosed as exc:
                return self.fail(f"the server closed the control subscriber: {exc.reason}")
            kind = frame.get("type")
            if kind in ("pong", "error") and frame.get("id") in self.pongs:
                self.pongs.pop(frame["id"]).set()  # (a rate_limited error is an answer too)
            elif kind == "message" and frame.get("room") == self.fuzzer.control_room:
                n = frame.get("data", {}).get("n")
                if n != self.received + 1 or frame.get("offset") != (self.last_offset or 0) + 1:
                    return self.fail(f"control stream skipped: got n={n} offset="
                                     f"{frame.get('offset')} after n={self.received} offset="
                                     f"{self.last_offset}")
                self.received, self.last_offset = n, frame["offset"]
                self.fuzzer.report.control_messages += 1
                self.arrived.set()
                self.arrived = trio.Event()
            else:
                return self.fail(f"unexpected frame on the control subscriber: {_short(frame)}")

    async def _publish(self, ws: trio_websocket.WebSocketConnection) -> None:
        n = 0
        while True:
            n += 1
            sent = trio.current_time()
            try:
                await ws.send_message(json.dumps({
                    "type": "publish", "id": n, "room": self.fuzzer.control_room,
                    "data": {"n": n}}))
                with trio.move_on_after(self.fuzzer.timeout) as scope:
                    reply = json.loads(await ws.get_message())
            except trio_websocket.ConnectionClosed as exc:
                return self.fail(f"the server closed the control publisher: {exc.reason}")
            if scope.cancelled_caught:
                return self.fail(f"control publish {n} not answered within "
                                 f"{self.fuzzer.timeout}s: the server stalled")
            if reply.get("type") != "published" or reply.get("id") != n:
                return self.fail(f"control publish {n} got {_short(reply)}")
            self.published = n
            await trio.sleep_until(sent + self.period)

    async def check(self) -> None:
        """The server still answers a ping, and every acknowledged publish was delivered."""
        timeout = self.fuzzer.timeout
        if (self.failure is None and self.sub_ws is not None
                and trio.current_time() - self.pinged_at >= self.period):  # within the rate
            self.pinged_at = trio.current_time()
            key = f"ctl-ping-{self.fuzzer.report.examples}"
            self.pongs[key] = done = trio.Event()
            try:
                await self.sub_ws.send_message(json.dumps({"type": "ping", "id": key}))
            except trio_websocket.ConnectionClosed:
                self.fail("the control subscriber's connection is closed")
            with trio.move_on_after(timeout):
                await done.wait()
            if not done.is_set():
                self.fail(f"the server did not answer a ping within {timeout}s")
        if self.failure is None:
            want = self.published
            with trio.move_on_after(timeout):
                while self.received < want and self.failure is None:
                    await self.arrived.wait()
            if self.received < want:
                self.fail(f"control stream stalled: {want} acknowledged, {self.received} "
                          f"delivered after {timeout}s")
        if self.failure is not None:
            raise FuzzFailure(self.failure)


# ---------------------------------------------------------------- the fuzzer
@dataclass
class FuzzReport:
    """What a run did and found."""

    target: str
    examples: int = 0  # examples executed (generation, replay and shrinking)
    frames: int = 0
    replies: int = 0
    pushes: int = 0
    closes: Counter[int] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)  # reply types and error codes
    control_messages: int = 0
    seconds: float = 0.0
    failure: str | None = None  # hypothesis's final (shrunk) failure, with the example
    first_failure: str | None = None  # the first failing example as it was drawn

    def summary(self) -> str:
        closes = ", ".join(f"{code}×{n}" for code, n in sorted(self.closes.items())) or "none"
        lines = [
            f"roomcast fuzz {self.target}: {self.examples} examples in {self.seconds:.1f}s",
            f"  frames sent {self.frames}, replies {self.replies}, messages/presence "
            f"{self.pushes}, server closes {closes}",
            "  answers: " + ", ".join(f"{k} {n}" for k, n in self.answers.most_common()),
            f"  control stream: {self.control_messages} messages delivered in order",
        ]
        if self.failure is None:
            lines.append("  OK: no contract violation found")
        else:
            lines.append("  FAILED: " + self.failure)
            if self.first_failure and self.first_failure not in self.failure:
                lines.append("  first failure as drawn: " + self.first_failure)
        return "\n".join(lines)


class Fuzzer:
    """Runs hypothesis examples against one server, with the control clients alongside."""

    def __init__(self, target: Target, jwt_secret: str, *, jwt_algorithm: str = "HS256",
                 timeout: float = 5.0) -> None:
        self.target = target
        self.secret = jwt_secret
        self.algorithm = jwt_algorithm
        self.timeout = timeout
        self.run_id = os.urandom(4).hex()
        self.control_room = f"fuzzctl:{self.run_id}"
        self.report = FuzzReport(target.url)
        self.control = Control(self)

    # ------------------------------------------------------------ tokens
    def mint(self, sub: str, rooms: list[str] | None, publish: list[str] | None,
             ttl: float = 3600, secret: str | None = None, algorithm: str | None = None
             ) -> str:
        claims: dict[str, Any] = {"sub": sub, "exp": int(time.time() + ttl)}
        if rooms is not None:
            claims["rooms"] = rooms
        if publish is not None:
            claims["publish"] = publish
        return jwt.encode(claims, secret or self.secret, algorithm=algorithm or self.algorithm)

    def token_variant(self, sub: str, grant: str, variant: str) -> str:
        """Tokens for `refresh`: only "valid" (same sub, right key, live) may succeed."""
        claims = GRANTS[grant]
        rooms, publish = claims.get("rooms"), claims.get("publish")
        if variant == "valid":
            return self.mint(sub, rooms, publish, ttl=7200)
        if variant == "other":
            return self.mint(sub + "-other", rooms, publish)
        if variant == "badsig":
            return self.mint(sub, rooms, publish, secret=self.secret + "-wrong")
        if variant == "expired":
            return self.mint(sub, rooms, publish, ttl=-600)
        if variant == "none":
            return jwt.encode({"sub": sub, "exp": int(time.time()) + 3600}, "",
                              algorithm="none")
        return "not-a-jwt"

    # ------------------------------------------------------------ one example
    def execute(self, example: Example) -> None:
        """Called by hypothesis in a worker thread: run the example in the Trio loop."""
        trio.from_thread.run(self.run_example, example)

    async def run_example(self, example: Example) -> None:
        self.report.examples += 1
        number = self.report.examples
        problems: list[str] = []

        async def one(index: int, script: Script) -> None:
            try:
                await self.run_script(script, f"fuzz-{self.run_id}-{number}-{index}")
            except FuzzFailure as exc:
                problems.append(f"client {index}: {exc}")
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                problems.append(f"client {index}: connection failed: {exc!r}")
            except Exception as exc:  # a bug in the fuzzer: say so rather than blame the server
                where = traceback.extract_tb(exc.__traceback__)[-1]
                problems.append(f"client {index}: the fuzzer itself failed: {exc!r} at "
                                f"{where.filename}:{where.lineno}")

        async with trio.open_nursery() as nursery:
            for index, script in enumerate(example):
                nursery.start_soon(one, index, script)
        try:
            await self.control.check()
        except FuzzFailure as exc:
            problems.append(f"control: {exc}")
        if problems:
            message = "; ".join(problems)
            if self.report.first_failure is None:
                self.report.first_failure = f"{message}\n    example: {_short(example, 4000)}"
            raise FuzzFailure(message)

    async def _open(self, token: str) -> RawClient:
        t = self.target
        with trio.fail_after(self.timeout):
            stream: trio.abc.Stream
            if t.secure:
                stream = await trio.open_ssl_over_tcp_stream(t.host, t.port)
            else:
                stream = await trio.open_tcp_stream(t.host, t.port)
            client = RawClient(stream)
            await client.handshake(t.hostport, f"{t.path}?token={quote(token, safe='')}")
        return client

    async def run_script(self, script: Script, sub: str) -> None:
        claims = GRANTS[script.grant]
        session = Session(self, sub, script.grant)
        client = await self._open(self.mint(sub, claims.get("rooms"), claims.get("publish")))
        try:
            await self._hello(client, session)
            for action in script.actions:
                if client.closed is not None:
                    break
                if isinstance(action, Frame):
                    await self._frame(client, session, action)
                elif isinstance(action, ClientPing):
                    await self._client_ping(client, session, action)
                else:
                    await self._burst(client, session, action)
            if client.closed is None:  # one last ping: no reply may be left over
                session.serial += 1
                key = f"end-{session.serial}"
                await self._send(client, 0x1, json.dumps({"type": "ping", "id": key}).encode())
                answer = await self._reply(client, session, f"the closing ping {key}")
                if isinstance(answer, Closed):
                    self._justify(session, answer, "after the script")
                elif not _same_id(answer.get("id"), key):
                    raise FuzzFailure(f"a reply too many: {_short(answer)} came before the "
                                      "answer to the closing ping")
                else:
                    self._check(session, answer, Expect([key], {"pong"}, set()), key)
        finally:
            await client.close(self.timeout)

    async def _send(self, client: RawClient, opcode: int, payload: bytes,
                    fragments: int = 1) -> None:
        self.report.frames += 1
        # the server may close while we write; the close shows up on the next read
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await client.send(opcode, payload, fragments)

    async def _hello(self, client: RawClient, session: Session) -> None:
        answer = await self._reply(client, session, "the handshake")
        if isinstance(answer, Closed):
            raise FuzzFailure(f"closed right after the handshake: {answer.code} {answer.reason}")
        limits = answer.get("limits")
        if (answer.get("type") != "connected" or answer.get("user_id") != session.sub
                or not isinstance(answer.get("connection_id"), str)
                or not isinstance(limits, dict)
                or not isinstance(limits.get("max_message_bytes"), int)):
            raise FuzzFailure(f"the first frame is not a proper `connected`: {_short(answer)}")
        session.limit = limits["max_message_bytes"]

    async def _reply(self, client: RawClient, session: Session, what: str
                     ) -> dict[str, Any] | Closed:
        """The next reply-type frame (messages and presence events are checked on the way)."""
        with trio.move_on_after(self.timeout):
            while True:
                got = await client.receive()
                if isinstance(got, Closed):
                    self.report.closes[got.code] += 1
                    return got
                if isinstance(got, Pong | Ping):
                    raise FuzzFailure(f"a pong nobody asked for, waiting for {what}")
                if isinstance(got, bytes):
                    raise FuzzFailure(f"a binary frame from the server, waiting for {what}")
                frame = _server_frame(got)
                if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                    raise FuzzFailure(f"the server sent a frame without a type: {_short(frame)}")
                if frame["type"] in ("message", "joined", "left"):
                    self.report.pushes += 1
                    problem = session.observe(frame)
                    if problem:
                        raise FuzzFailure(problem)
                    continue
                if frame["type"] not in REPLY_TYPES | {"connected"}:
                    raise FuzzFailure(f"a frame type the contract does not know: {_short(frame)}")
                self.report.replies += 1
                return frame
        raise FuzzFailure(f"no reply within {self.timeout}s to {what}: the server stalled")

    def _justify(self, session: Session, closed: Closed, what: str) -> None:
        """A close where a reply was due is fine only when something sent explains it."""
        if closed.code == TOO_MANY and (session.rate_limited or session.burst):
            return
        if closed.code == PROTOCOL_VIOLATION and session.binary_sent:
            return
        raise FuzzFailure(f"closed with {closed.code} ({closed.reason!r}) {what}; nothing sent "
                          "explains that close")

    async def _frame(self, client: RawClient, session: Session, frame: Frame) -> None:
        opcode, payload = session.render(frame)
        expect = session.expect(opcode, payload)
        what = f"frame {_short(payload[:200])}"
        if opcode == 0x2:
            session.binary_sent += 1
        await self._send(client, opcode, payload, frame.fragments)
        answer = await self._reply(client, session, what)
        if isinstance(answer, Closed):
            if answer.code in expect.closes:
                return
            # A 4429 earned by earlier rate-limited commands may land here: the error reply
            # to the command that crossed the line can arrive before its close.
            earned = answer.code == TOO_MANY and (session.rate_limited or session.burst)
            if expect.close_only and not earned:
                raise FuzzFailure(f"closed with {answer.code} ({answer.reason!r}) after {what}; "
                                  f"expected {sorted(expect.closes)}")
            return self._justify(session, answer, f"after {what}")
        if expect.close_only:
            raise FuzzFailure(f"answered {_short(answer)} to {what}; the contract says close "
                              f"with {sorted(expect.closes)}")
        self._check(session, answer, expect, what)

    def _check(self, session: Session, reply: dict[str, Any], expect: Expect, what: str) -> None:
        kind = reply["type"]
        self.report.answers[kind if kind != "error" else f"error:{reply.get('code')}"] += 1
        if not any(_same_id(reply.get("id"), i) for i in expect.ids):
            raise FuzzFailure(f"reply id {reply.get('id')!r}, expected one of {expect.ids!r}: "
                              f"{_short(reply)} to {what}")
        if kind == "error":
            code = reply.get("code")
            if code == "rate_limited":
                session.rate_limited = True
            if code in ALWAYS_ACCEPTABLE or code in expect.codes:
                if isinstance(reply.get("message"), str):
                    return
                raise FuzzFailure(f"an error without a message: {_short(reply)}")
            raise FuzzFailure(f"error {code!r}, expected "
                              f"{sorted(expect.codes) if 'error' in expect.kinds else 'success'}"
                              f": {_short(reply)} to {what}")
        if kind not in expect.kinds:
            raise FuzzFailure(f"reply {kind!r}, expected {sorted(expect.kinds)}: "
                              f"{_short(reply)} to {what}")
        deep = reply.get(DEEP_FRAME, False)  # read shallowly: its contents cannot be checked
        problem = expect.check(reply) if expect.check and not deep else None
        if problem:
            raise FuzzFailure(f"{problem}: {_short(reply)} to {what}")
        if expect.track:
            expect.track(reply)

    async def _client_ping(self, client: RawClient, session: Session, ping: ClientPing) -> None:
        self.report.frames += 1
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await client.raw_frame(0x9, ping.payload)
        with trio.move_on_after(self.timeout):
            while True:
                got = await client.receive()
                if isinstance(got, Pong):
                    if got.payload != ping.payload:
                        raise FuzzFailure("the pong's payload differs from the ping's")
                    return
                if isinstance(got, Closed):
                    self.report.closes[got.code] += 1
                    return self._justify(session, got, "after a WebSocket ping")
                if not isinstance(got, str):
                    raise FuzzFailure(f"{_short(got)} arrived when only a pong was due")
                frame = _server_frame(got)
                if not isinstance(frame, dict) or frame.get("type") not in ("message", "joined",
                                                                              "left"):
                    raise FuzzFailure(f"{_short(frame)} arrived when only a pong was due")
                self.report.pushes += 1
                problem = session.observe(frame)
                if problem:
                    raise FuzzFailure(problem)
        raise FuzzFailure(f"no pong within {self.timeout}s to a WebSocket ping")

    async def _burst(self, client: RawClient, session: Session, burst: Burst) -> None:
        session.burst = True
        keys = []
        for _ in range(burst.count):
            session.serial += 1
            keys.append(f"b{session.serial}")
            await self._send(client, 0x1, json.dumps({"type": "ping", "id": keys[-1]}).encode())
        for key in keys:
            answer = await self._reply(client, session, f"burst ping {key}")
            if isinstance(answer, Closed):
                return self._justify(session, answer, "during a burst")
            self._check(session, answer, Expect([key], {"pong"}, set()), f"burst ping {key}")


# ---------------------------------------------------------------- running it
def _run_hypothesis(fuzzer: Fuzzer, examples: int, seed: int | None, shrink: bool,
                    clients: int) -> None:
    """Hypothesis drives; every example runs in the Trio loop through fuzzer.execute."""
    phases = tuple(Phase) if shrink else tuple(p for p in Phase if p != Phase.shrink)

    @settings(max_examples=examples, deadline=None, phases=phases, print_blob=False,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(example=example_strategy(clients))
    def fuzz_server(example: Example) -> None:
        fuzzer.execute(example)

    test = hypothesis.seed(seed)(fuzz_server) if seed is not None else fuzz_server
    try:
        test()
    except Exception as exc:  # the failure (shrunk), with hypothesis's notes
        notes = "\n    ".join(getattr(exc, "__notes__", []))
        fuzzer.report.failure = f"{exc}\n    {notes}" if notes else str(exc)


async def fuzz(url: str, jwt_secret: str, *, examples: int = 200, seed: int | None = None,
               clients: int = 3, timeout: float = 5.0, jwt_algorithm: str = "HS256",
               allow_remote: bool = False, shrink: bool = True) -> FuzzReport:
    """Fuzz the server at `url` (tokens signed with `jwt_secret`); returns the report.
    Refuses non-loopback targets unless `allow_remote` (ValueError)."""
    target = parse_target(url, allow_remote)
    fuzzer = Fuzzer(target, jwt_secret, jwt_algorithm=jwt_algorithm, timeout=timeout)
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(fuzzer.control.run)
        except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed,
                trio.TooSlowError, FuzzFailure, ValueError, LookupError, TypeError) as exc:
            fuzzer.report.failure = (
                f"could not start the control clients at {url}: {exc.__cause__ or exc!r}; is "
                "the server running there, and is --jwt-secret its secret?")
        else:
            await trio.to_thread.run_sync(_run_hypothesis, fuzzer, examples, seed, shrink,
                                          clients)
        nursery.cancel_scope.cancel()
    fuzzer.report.seconds = time.monotonic() - started
    return fuzzer.report


def main(argv: Sequence[str] | None = None) -> int:
    """`roomcast fuzz ws://HOST:PORT/ws --jwt-secret S [...]`; exit 0 when nothing was found."""
    parser = argparse.ArgumentParser(
        prog="roomcast fuzz",
        description="Fuzz a server that speaks the roomcast protocol (see docs/fuzzing.md).",
    )
    parser.add_argument("url", help="the WebSocket endpoint, e.g. ws://127.0.0.1:8000/ws")
    parser.add_argument("--jwt-secret", default=os.environ.get("ROOMCAST_JWT_SECRET"),
                        help="the server's HMAC secret (or ROOMCAST_JWT_SECRET)")
    parser.add_argument("--jwt-algorithm", default="HS256", choices=["HS256", "HS384", "HS512"])
    parser.add_argument("--examples", type=int, default=200, help="examples to run (200)")
    parser.add_argument("--seed", type=int, default=None, help="a seed, to repeat a run")
    parser.add_argument("--clients", type=int, default=3, help="fuzz clients per example (3)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds any reply may take before the server counts as stalled")
    parser.add_argument("--no-shrink", action="store_true",
                        help="report the first failure as drawn, without shrinking it")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a target that is not a loopback address (only for servers "
                             "you run: the traffic is deliberately abusive)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.jwt_secret:
        print("roomcast fuzz: --jwt-secret (or ROOMCAST_JWT_SECRET) is required to sign the "
              "clients' tokens", file=sys.stderr)
        return 2
    if args.examples < 1 or args.clients < 1 or args.timeout <= 0:
        print("roomcast fuzz: --examples and --clients must be at least 1, --timeout above 0",
              file=sys.stderr)
        return 2
    try:
        parse_target(args.url, args.allow_remote)
    except ValueError as exc:
        print(f"roomcast fuzz: {exc}", file=sys.stderr)
        return 2
    report = trio.run(partial(
        fuzz, args.url, args.jwt_secret, examples=args.examples, seed=args.seed,
        clients=args.clients, timeout=args.timeout, jwt_algorithm=args.jwt_algorithm,
        allow_remote=args.allow_remote, shrink=not args.no_shrink,
    ))
    print(report.summary())
    return 0 if report.failure is None else 1
