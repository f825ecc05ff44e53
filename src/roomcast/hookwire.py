"""Backend hooks, sans IO (protocol §11): the request bodies, the signature, and what an
application's answer means. The HTTP call itself is `roomcast.hooks`.

Every answer is HTTP 200 with a JSON object holding `result` (an object) or `error`
(`{"code", "message"}`); anything else — another status, another body, a refused
connection, a time-out — is a backend failure.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from roomcast.codes import CloseCode, ErrorCode
from roomcast.permissions import Principal

SIGNATURE_HEADER: Final = "X-Roomcast-Signature"
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")
_decoder = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class Allowed:
    """The application said yes: its `result` object."""

    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Denied:
    """The application said no: its `error` code (as it sent it) and message."""

    code: Any
    message: str


@dataclass(frozen=True, slots=True)
class Failed:
    """A backend failure: no answer the contract can read. `status` is the HTTP status
    when there was one (404 matters to the rpc hook)."""

    reason: str
    status: int | None = None


Outcome = Allowed | Denied | Failed


def signature(secret: str, body: bytes) -> str:
    """The `X-Roomcast-Signature` value: HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def read_answer(status: int, body: bytes) -> Outcome:
    """What an HTTP answer from the application means."""
    if status != 200:
        return Failed(f"HTTP {status}", status)
    try:
        answer = _decoder.decode(body)
    except msgspec.DecodeError:
        return Failed("the answer is not JSON")
    if isinstance(answer, dict) and isinstance(answer.get("result"), dict):
        return Allowed(answer["result"])
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        error = answer["error"]
        message = error.get("message")
        return Denied(error.get("code"), message if isinstance(message, str) else "")
    return Failed("the answer holds neither a result object nor an error object")


def error_code(code: Any) -> str:
    """An application's error code for an `error` frame: its own when it is 1-40 of
    `a-z` and `_`, else `forbidden`."""
    if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
        return code
    return ErrorCode.FORBIDDEN


def close_code(code: Any) -> int:
    """An application's refusal of a connection: its code when 4000-4999, else 4403."""
    if isinstance(code, int) and not isinstance(code, bool) and 4000 <= code <= 4999:
        return code
    return CloseCode.FORBIDDEN


class BadResult(ValueError):
    """A connect hook's `result` that cannot admit anybody (it says which field)."""


def principal_from(result: dict[str, Any],
                   default_rooms: Callable[[str], tuple[str, ...]]) -> Principal:
    """The connection's identity from a connect hook's `result`, as if its token had
    carried `sub` = `user_id` and those claims; BadResult when a field is wrong."""
    user_id = result.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise BadResult("user_id must be a non-empty string")
    rooms = _strings(result, "rooms")
    publish = _strings(result, "publish")
    subscribe = _strings(result, "subscribe")
    info = result.get("info", {})
    if not isinstance(info, dict):
        raise BadResult("info must be an object")
    expires_at = result.get("expires_at")
    if expires_at is not None and (isinstance(expires_at, bool)
                                   or not isinstance(expires_at, int | float)):
        raise BadResult("expires_at must be Unix seconds")
    return Principal(
        user_id=user_id,
        rooms=rooms if rooms is not None else default_rooms(user_id),
        publish=publish or (),
        info=info,
        expires_at=float(expires_at) if expires_at is not None else float("inf"),
        jti=None,
        subscribe=tuple(r.replace("{sub}", user_id) for r in subscribe or ()),
    )


def _strings(result: dict[str, Any], name: str) -> tuple[str, ...] | None:
    value = result.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadResult(f"{name} must be a list of strings")
    return tuple(value)
