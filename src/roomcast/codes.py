"""The vocabulary of the wire: close codes (protocol §7) and error codes (§5), named once.

Pure: no IO. Every module that closes a connection or answers an error uses these names,
so a code means one thing everywhere.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Final


class CloseCode(IntEnum):
    """Why a WebSocket ended, and so whether the client should come back (§7)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # draining: come back at once, with jitter
    PROTOCOL_ERROR = 1002  # RFC 6455 broken by the peer
    NO_STATUS = 1005  # a close frame without a code (never sent on the wire)
    ABNORMAL = 1006  # the TCP connection ended without a close frame (never sent on the wire)
    INVALID_DATA = 1007  # a text message that is not UTF-8
    TOO_BIG = 1009
    TRY_AGAIN_LATER = 1013  # at capacity: come back with backoff
    TLS_HANDSHAKE = 1015  # never sent on the wire
    PROTOCOL_VIOLATION = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    HEARTBEAT_TIMEOUT = 4408
    TOO_SLOW = 4409
    TOO_MANY = 4429
    INTERNAL = 4500


LOCAL_ONLY_CLOSE_CODES: Final = frozenset(
    {CloseCode.NO_STATUS, CloseCode.ABNORMAL, CloseCode.TLS_HANDSHAKE}
)
"""Codes that name what happened locally; RFC 6455 says they MUST NOT be sent."""

CLOSE_MEANINGS: Final = {
    CloseCode.NORMAL: "normal closure",
    CloseCode.GOING_AWAY: "server shutting down",
    CloseCode.TOO_BIG: "frame too big",
    CloseCode.TRY_AGAIN_LATER: "server at capacity",
    CloseCode.PROTOCOL_VIOLATION: "protocol violation",
    CloseCode.UNAUTHORIZED: "unauthorized",
    CloseCode.FORBIDDEN: "forbidden",
    CloseCode.HEARTBEAT_TIMEOUT: "heartbeat timeout",
    CloseCode.TOO_SLOW: "too slow: outgoing queue overflowed",
    CloseCode.TOO_MANY: "too many connections or commands",
    CloseCode.INTERNAL: "internal error",
}


def application_close_code(code: int) -> bool:
    """Whether an application (the server API, `disconnect_user`, a hook) may close a
    connection with `code`: 1000, or one of the private range 4000-4999."""
    return code == CloseCode.NORMAL or 4000 <= code <= 4999


def valid_on_wire(code: int) -> bool:
    """Whether RFC 6455 allows `code` in a close frame."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class ErrorCode(StrEnum):
    """The `code` of an `error` frame (§5) and of an HTTP API error."""

    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    BAD_ROOM = "bad_room"
    FORBIDDEN = "forbidden"
    NOT_SUBSCRIBED = "not_subscribed"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"  # the backplane (or a hook's backend) is unreachable
