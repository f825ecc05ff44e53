"""The server API's errors: each HTTP status and `{"error": code, "message"}` body becomes a
RoomcastError subclass whose message says what to do next, and `retriable` says whether
trying the same call again may succeed."""

from __future__ import annotations

from typing import Any

from roomcast.errors import RoomcastError

__all__ = [
    "ApiError",
    "BadRequest",
    "ConnectionFailed",
    "Forbidden",
    "NotFound",
    "NotSupported",
    "RateLimited",
    "RequestTimedOut",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "error_from_answer",
]


class ApiError(RoomcastError):
    """A call to the server API failed. `status` is the HTTP status (0 when no answer came),
    `code` the server's error code, `message` its explanation."""

    retriable = False
    advice = "see the message for what the server objected to"

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code} (HTTP {status}): {message} ({self.advice})" if status
                         else f"{code}: {message} ({self.advice})")
        self.status = status
        self.code = code
        self.message = message


class BadRequest(ApiError):
    """400/413/422: the request is wrong (bad room name, bad JSON, too large)."""

    advice = "fix the call's arguments; sending it again as it is will fail the same way"


class Unauthorized(ApiError):
    """401: no API key, or the wrong one."""

    advice = "pass the server's api_key (setting ROOMCAST_API_KEY) as api_key="


class Forbidden(ApiError):
    """403: the server refuses this call."""

    advice = "the server's settings forbid this call"


class NotFound(ApiError):
    """404/405: no such endpoint, or the server does not have this feature installed."""

    advice = "check base_url (the server's HTTP port, without /api) and the server's version"


class NotSupported(ApiError):
    """501: the server knows the endpoint but cannot do it in this version or setup."""

    advice = "upgrade the server, or do without this call"


class RateLimited(ApiError):
    """429: too many calls; `retry_after` seconds is the server's hint, when it gave one."""

    retriable = True
    advice = "slow down, or batch publishes (AsyncClient(coalesce=True) or batch())"

    def __init__(self, status: int, code: str, message: str,
                 retry_after: float | None = None) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class Unavailable(ApiError):
    """502/503/504: the server (or its cluster backplane) cannot serve now; it may soon."""

    retriable = True
    advice = "retry later; the server is draining or its backplane is unreachable"


class ServerError(ApiError):
    """500 and other 5xx: the server failed; it logged why."""

    retriable = True
    advice = "retry later; if it persists, look at the server's log"


class RequestTimedOut(ApiError, TimeoutError):
    """408, or no answer within the client's timeout (the call may have been done)."""

    retriable = True
    advice = "retry (a publish keeps its idempotency_key, so it is not delivered twice)"


class ConnectionFailed(ApiError, ConnectionError):
    """No HTTP answer at all: refused, reset, DNS or TLS failure."""

    retriable = True
    advice = "check that the server runs and base_url points at its HTTP port"


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 405: NotFound,
    408: RequestTimedOut, 413: BadRequest, 422: BadRequest, 429: RateLimited,
    501: NotSupported, 502: Unavailable, 503: Unavailable, 504: Unavailable,
}


def error_from_answer(status: int, body: Any, retry_after: str | None = None) -> ApiError:
    """The error for an answer with `status` and decoded `body` (the server's
    `{"error", "message"}`, or anything else a proxy in between may have sent)."""
    code, message = "http_error", f"the server answered HTTP {status}"
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):  # a batch reply's error entry
            body, inner = inner, inner.get("error")
        if isinstance(inner, str):
            code = inner
            message = str(body.get("message", message))
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else BadRequest)
    if kind is RateLimited:
        try:
            after = float(retry_after) if retry_after is not None else None
        except ValueError:
            after = None
        return RateLimited(status, code, message, after)
    return kind(status, code, message)


_BY_CODE: dict[str, int] = {
    "bad_request": 400, "bad_json": 400, "bad_room": 400, "forbidden": 403,
    "not_found": 404, "rate_limited": 429, "unavailable": 503, "internal": 500,
    "not_implemented": 501, "timeout": 408, "unauthorized": 401,
}


def error_from_entry(entry: Any) -> ApiError:
    """The error of a batch reply's `{"error": {"error", "message"}}` entry (batch entries
    carry no status: it is inferred from the code)."""
    inner = entry.get("error") if isinstance(entry, dict) else None
    code = inner.get("error") if isinstance(inner, dict) else None
    return error_from_answer(_BY_CODE.get(str(code), 400), entry)
