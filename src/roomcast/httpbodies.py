"""The server API's request bodies (§8, §15), decoded and validated with msgspec.

One struct per endpoint; the same structs are the `params` of `/api/batch` commands, so
a command in a batch is checked exactly as the single endpoint would check it. Every
failure is an `HttpError` (400) whose message says what to send instead. `data` stays
the JSON text it arrived as (`msgspec.Raw`): it is never decoded and encoded again.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Final, TypeVar

import msgspec

from roomcast import protocol as p
from roomcast.codes import CloseCode, ErrorCode, application_close_code
from roomcast.httpwire import HttpError

MAX_BROADCAST_ROOMS: Final = 1000
MAX_BATCH_COMMANDS: Final = 1000
MAX_REASON_BYTES: Final = 120
T = TypeVar("T")


class PublishBody(msgspec.Struct):
    """POST /api/publish"""

    room: str
    data: msgspec.Raw
    event: str | None = None
    idempotency_key: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class BroadcastBody(msgspec.Struct):
    """POST /api/broadcast"""

    rooms: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_BROADCAST_ROOMS)]
    data: msgspec.Raw
    event: str | None = None


class DisconnectBody(msgspec.Struct):
    """POST /api/disconnect"""

    user_id: Annotated[str, msgspec.Meta(min_length=1)]
    code: int = CloseCode.NORMAL
    reason: str | None = None


class RevokeBody(msgspec.Struct):
    """POST /api/revoke; `expires_at` is unix seconds or an ISO 8601 time."""

    jti: Annotated[str, msgspec.Meta(min_length=1)]
    expires_at: float | str | None = None


class RoomQuery(msgspec.Struct):
    """The params of `presence` in a batch (a query string on the single endpoint)."""

    room: str


class HistoryQuery(msgspec.Struct):
    """The params of `history` in a batch."""

    room: str
    since: Annotated[int, msgspec.Meta(ge=0)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class NoParams(msgspec.Struct):
    """The params of `stats` in a batch: none (anything given is ignored)."""


class UserRoomBody(msgspec.Struct):
    """POST /api/subscribe and /api/unsubscribe (§12)."""

    user_id: Annotated[str, msgspec.Meta(min_length=1)]
    room: str
    connection_id: str | None = None


class BatchCommand(msgspec.Struct):
    """One command of POST /api/batch: a method and the single endpoint's body."""

    method: str
    params: msgspec.Raw = msgspec.Raw(b"{}")


class BatchBody(msgspec.Struct):
    """POST /api/batch"""

    commands: Annotated[list[BatchCommand],
                        msgspec.Meta(min_length=1, max_length=MAX_BATCH_COMMANDS)]


EXAMPLES: Final[dict[type[Any], str]] = {
    PublishBody: '{"room": "project:12", "event": "task.created", "data": {"task_id": 7}}',
    BroadcastBody: '{"rooms": ["project:12", "project:13"], "data": {"text": "hi"}}',
    DisconnectBody: '{"user_id": "alice", "code": 4403, "reason": "account disabled"}',
    RevokeBody: '{"jti": "token-id", "expires_at": 1767225600}',
    RoomQuery: '{"room": "project:12"}',
    HistoryQuery: '{"room": "project:12", "since": 40, "limit": 100}',
    NoParams: "{}",
    UserRoomBody: '{"user_id": "alice", "room": "project:12"}',
    BatchBody: '{"commands": [{"method": "publish", "params": {"room": "project:12", '
               '"data": {"task_id": 7}}}]}',
}
_DECODERS: Final[dict[type[Any], msgspec.json.Decoder[Any]]] = {
    kind: msgspec.json.Decoder(kind) for kind in EXAMPLES
}


def bad_request(message: str) -> HttpError:
    return HttpError(400, ErrorCode.BAD_REQUEST, message)


def decode(kind: type[T], raw: bytes) -> T:
    """`raw` decoded into `kind`, or a 400 saying what is wrong and what to send."""
    example = EXAMPLES[kind]
    try:
        value: T = _DECODERS[kind].decode(raw)
        return value
    except msgspec.ValidationError as exc:
        raise bad_request(f"{exc}; send a JSON object like {example}") from None
    except msgspec.DecodeError as exc:
        if not raw.strip():
            raise bad_request(f"the body is empty; send a JSON object like {example}") from None
        raise bad_request(f"the body is not valid JSON ({exc}); send a JSON object like "
                          f"{example}") from None


def check_room(room: str, field: str = "room") -> None:
    if not p.valid_room(room):
        raise bad_request(f"{field}: {p.bad_room_message(room)}")


def check_disconnect(body: DisconnectBody) -> str:
    """The reason to close with, once the code and reason are known to be sendable."""
    if not application_close_code(body.code):
        raise bad_request(f"code must be 1000 or 4000..4999 (see the close codes in "
                          f"docs/protocol.md), got {body.code}")
    reason = body.reason if body.reason is not None else "disconnected by the server"
    if len(reason.encode()) > MAX_REASON_BYTES:
        raise bad_request(f"reason must be at most {MAX_REASON_BYTES} bytes of UTF-8; "
                          "shorten it")
    return reason


def unix_time(value: float | str) -> float:
    """Seconds since the epoch from a number or an ISO 8601 text (no zone means UTC)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise bad_request(f"expires_at: {value[:64]!r} is neither unix seconds nor an ISO "
                              "8601 time; send e.g. 1767225600 or \"2026-01-01T00:00:00Z\""
                              ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    if not math.isfinite(value):
        raise bad_request("expires_at must be a finite number of unix seconds")
    return float(value)
