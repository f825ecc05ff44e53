"""What the blocking and the async client share: the request a Call makes with httpx, how
an answer (or a failure to get one) becomes a result or an ApiError, and whether to try
again."""

from __future__ import annotations

import json
from typing import Any

import httpx

from roomcast.api.calls import Call, Retry
from roomcast.api.errors import (
    ApiError,
    ConnectionFailed,
    RateLimited,
    RequestTimedOut,
    error_from_answer,
)

__all__ = ["DEFAULT_RETRY", "Options", "answer", "may_retry", "transport_error"]

DEFAULT_RETRY = Retry()


class Options:
    """A client's settings: where the server is, its API key, time-outs, pool and retries."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, retry: Retry,
                 max_connections: int) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be the server's HTTP listener, e.g. "
                             f"http://127.0.0.1:8001, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = httpx.Timeout(timeout)
        self.limits = httpx.Limits(max_connections=max_connections,
                                   max_keepalive_connections=max_connections)
        self.retry = retry

    def request_args(self, call: Call) -> dict[str, Any]:
        """httpx.request arguments for `call` as a single endpoint."""
        if call.verb == "GET":
            return {"method": "GET", "url": call.path, "params": call.params}
        return {"method": "POST", "url": call.path,
                "content": json.dumps(call.params, separators=(",", ":")).encode()}


def answer(call: Call, response: httpx.Response) -> Any:
    """The result of `call` from its answer, or raise its ApiError."""
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = None
    if response.status_code != 200:
        raise error_from_answer(response.status_code, body, response.headers.get("retry-after"))
    if not isinstance(body, dict):
        raise ApiError(200, "bad_answer", f"{call.path} answered something that is not a JSON "
                       "object; is base_url a roomcast server's HTTP port?")
    return call.parse(body)


class NotSent(ConnectionFailed):
    """The connection could not be made: the call surely did not reach the server."""


def transport_error(exc: httpx.TransportError, url: str) -> ApiError:
    """The ApiError for httpx failing to get an answer."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return NotSent(0, "connection_failed", f"cannot connect to {url}: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimedOut(0, "timeout", f"no answer from {url} in time: {exc!r}")
    return ConnectionFailed(0, "connection_failed", f"the connection to {url} failed: {exc!r}")


def may_retry(call: Call, error: ApiError) -> bool:
    """Whether `call` may be sent again after `error`: any retriable error for an
    idempotent call; for another, only when the server surely did not do it."""
    if call.idempotent:
        return error.retriable
    return isinstance(error, NotSent | RateLimited)
