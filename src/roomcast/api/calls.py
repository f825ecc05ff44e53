"""The server API's calls, described without IO: the request each one makes (as a single
endpoint and as a batch command), how its answer reads, and whether sending it again is
safe. The blocking and the async client both send these. Pure: no IO."""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from roomcast.api.errors import ApiError, RateLimited, error_from_entry
from roomcast.api.results import (
    BroadcastResult,
    HistoryResult,
    PresenceResult,
    PublishResult,
    Stats,
)

__all__ = ["Call", "Retry", "parse_batch"]


@dataclass(frozen=True, slots=True)
class Call:
    """One API call: `method` names it in a batch, `verb` and `path` as a single request,
    `params` is its body (POST) or query (GET); `parse` reads the answer. `idempotent`:
    sending it twice does no harm, so it is retried even when the first may have arrived."""

    method: str
    verb: str
    params: dict[str, Any]
    parse: Callable[[Mapping[str, Any]], Any]
    idempotent: bool = True

    @property
    def path(self) -> str:
        """The single endpoint's path."""
        return f"/api/{self.method}"

    def command(self) -> dict[str, Any]:
        """The call as a `/api/batch` command."""
        return {"method": self.method, "params": self.params}

    # ------------------------------------------------------------ the calls
    @classmethod
    def publish(cls, room: str, data: Any, event: str | None = None,
                idempotency_key: str | None = None) -> Call:
        """POST /api/publish with an idempotency key (made up unless given): a retry of it
        is answered `duplicate` and never delivered twice."""
        key = idempotency_key or secrets.token_hex(16)
        params: dict[str, Any] = {"room": room, "data": data, "idempotency_key": key}
        if event is not None:
            params["event"] = event
        return cls("publish", "POST", params,
                   lambda body: PublishResult.parse(room, key, body))

    @classmethod
    def broadcast(cls, rooms: Sequence[str], data: Any, event: str | None = None) -> Call:
        """POST /api/broadcast (no idempotency key: retried only when it was surely not
        sent)."""
        params: dict[str, Any] = {"rooms": list(rooms), "data": data}
        if event is not None:
            params["event"] = event
        return cls("broadcast", "POST", params, BroadcastResult.parse, idempotent=False)

    @classmethod
    def disconnect(cls, user_id: str, code: int | None = None,
                   reason: str | None = None) -> Call:
        """POST /api/disconnect: the number of connections closed on the answering node."""
        params: dict[str, Any] = {"user_id": user_id}
        if code is not None:
            params["code"] = code
        if reason is not None:
            params["reason"] = reason
        return cls("disconnect", "POST", params, lambda body: int(body.get("closed", 0)))

    @classmethod
    def revoke(cls, jti: str, expires_at: float | str | None = None) -> Call:
        """POST /api/revoke: connections with that token id close with 4401."""
        params: dict[str, Any] = {"jti": jti}
        if expires_at is not None:
            params["expires_at"] = expires_at
        return cls("revoke", "POST", params, lambda body: None)

    @classmethod
    def subscribe(cls, user_id: str, room: str, connection_id: str | None = None) -> Call:
        """POST /api/subscribe (§12): the number of connections subscribed."""
        params = _user_room(user_id, room, connection_id)
        return cls("subscribe", "POST", params, lambda body: int(body.get("subscribed", 0)))

    @classmethod
    def unsubscribe(cls, user_id: str, room: str, connection_id: str | None = None) -> Call:
        """POST /api/unsubscribe (§12): the number of connections unsubscribed."""
        params = _user_room(user_id, room, connection_id)
        return cls("unsubscribe", "POST", params,
                   lambda body: int(body.get("unsubscribed", 0)))

    @classmethod
    def presence(cls, room: str) -> Call:
        """GET /api/presence?room=R"""
        return cls("presence", "GET", {"room": room},
                   lambda body: PresenceResult.parse(room, body))

    @classmethod
    def history(cls, room: str, since: int | None = None, limit: int | None = None) -> Call:
        """GET /api/history?room=R&since=N&limit=L"""
        params: dict[str, Any] = {"room": room}
        if since is not None:
            params["since"] = since
        if limit is not None:
            params["limit"] = limit
        return cls("history", "GET", params, lambda body: HistoryResult.parse(room, body))

    @classmethod
    def stats(cls) -> Call:
        """GET /api/stats"""
        return cls("stats", "GET", {}, Stats.parse)


def _user_room(user_id: str, room: str, connection_id: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"user_id": user_id, "room": room}
    if connection_id is not None:
        params["connection_id"] = connection_id
    return params


def parse_batch(calls: Sequence[Call], body: Mapping[str, Any]) -> list[Any]:
    """Each command's result, or its ApiError, from a `/api/batch` answer."""
    replies = body.get("replies")
    if not isinstance(replies, list) or len(replies) != len(calls):
        raise ApiError(200, "bad_answer", "the batch answer does not have one reply per "
                       "command; is base_url a roomcast server?")
    out: list[Any] = []
    for call, reply in zip(calls, replies, strict=True):
        if isinstance(reply, dict) and "result" in reply:
            out.append(call.parse(reply["result"] or {}))
        else:
            out.append(error_from_entry(reply))
    return out


@dataclass(frozen=True, slots=True)
class Retry:
    """When and how long to wait before trying a call again: up to `attempts` tries in
    all, waits growing from `initial` by `factor` to `maximum`, with full jitter; a 429's
    Retry-After is followed (up to `maximum`)."""

    attempts: int = 3
    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 5.0

    def delay(self, attempt: int, error: ApiError,
              rand: Callable[[], float] = random.random) -> float | None:
        """Seconds to wait before try `attempt + 1` (after failed try `attempt`, 0-based);
        None when the call must not be tried again."""
        if not error.retriable or attempt + 1 >= self.attempts:
            return None
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return min(self.maximum, error.retry_after)
        return min(self.maximum, self.initial * self.factor ** attempt) * (1 - rand())


NO_RETRY = Retry(attempts=1)
