"""What the contract says, as the fuzzer judges it: reply types, error codes, grants, the
command schema (§4), JSON equality and room patterns, and how a server frame is read."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from roomcast.errors import RoomcastError

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
GRANTS: Final[dict[str, dict[str, list[str]]]] = {
    "full": {"rooms": ["fuzz:*", "fuzzctl:*"], "publish": ["fuzz:*"]},
    "narrow": {"rooms": ["fuzz:a"], "publish": []},
    "none": {},  # no claims: only the personal room (the default `default_rooms`)
}


class FuzzFailure(RoomcastError, AssertionError):
    """The server did something the contract does not allow (the message says what)."""


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


def glob(pattern: str, room: str) -> bool:
    """Shell-style room patterns (§2): `*` any run (`:` included), `?` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, room, re.DOTALL) is not None


def reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


MISSING: Final = object()
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


def surrogates(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, list):
        return any(surrogates(v) for v in value)
    if isinstance(value, dict):
        return any(surrogates(k) or surrogates(v) for k, v in value.items())
    return False


def nesting(text: str) -> int:
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


def integer(value: Any, low: int, high: int | None = None) -> int:
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
        worst = max(worst, integer(position["offset"], 0), _text(position["epoch"]))
    return worst


def _key(value: Any) -> int:
    return VALID if isinstance(value, str) and len(value) <= 64 else INVALID


def _field(command: dict[str, Any], name: str, check: Callable[[Any], int], *,
           required: bool = False, null: int = EITHER) -> int:
    value = command.get(name, MISSING)
    if value is MISSING:
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
        return max(f("room", _text, required=True), f("since", partial(integer, low=0)),
                   f("limit", partial(integer, low=1, high=1000)))
    if kind in ("presence",):
        return f("room", _text, required=True)
    if kind == "refresh":
        return f("token", _text, required=True)
    return VALID  # ping


def id_verdict(raw: Any) -> int:
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



DEEP_FRAME: Final = "\x00deep"  # marks a server frame read by _shallow


def server_frame(text: str) -> Any:
    """A frame from the server as JSON; one nested too deeply for Python (deep data a client
    published) is read shallowly, for its top-level fields."""
    try:
        return json.loads(text)
    except RecursionError:
        frame = _shallow(text)
        frame[DEEP_FRAME] = True
        return frame
    except ValueError:
        raise FuzzFailure(f"the server sent a text frame that is not JSON: {short(text)}"
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


def utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"

