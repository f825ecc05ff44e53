"""The roomcast server API for backends: publish, broadcast, disconnect, revoke,
server-side subscribe, presence, history, stats and batches over HTTP.

    from roomcast.api import Client            # Django, Flask, Celery: blocking
    with Client("http://127.0.0.1:8001", api_key=KEY) as api:
        api.publish("project:12", {"task_id": 7}, event="task.created")

    from roomcast.api import AsyncClient       # FastAPI (asyncio) or Trio
    async with AsyncClient("http://127.0.0.1:8001", api_key=KEY, coalesce=True) as api:
        await api.publish("project:12", {"task_id": 7}, event="task.created")

Both keep a connection pool, retry what is safe to retry (a publish carries an
idempotency key, so it is never delivered twice), answer with typed results and raise
`ApiError` subclasses of `roomcast.errors.RoomcastError`. Needs only httpx (the `client`
extra), none of the server's own dependencies. See docs/clients.md.
"""

from __future__ import annotations

from roomcast.api.aio import AsyncBatch, AsyncClient
from roomcast.api.calls import Call, Retry
from roomcast.api.errors import (
    ApiError,
    BadRequest,
    ConnectionFailed,
    Forbidden,
    NotFound,
    NotSupported,
    RateLimited,
    RequestTimedOut,
    ServerError,
    Unauthorized,
    Unavailable,
)
from roomcast.api.results import (
    BroadcastResult,
    HistoryMessage,
    HistoryResult,
    PresenceResult,
    PresenceUser,
    PublishResult,
    Stats,
)
from roomcast.api.sync import Batch, Client
from roomcast.errors import RoomcastError

__all__ = [
    "ApiError",
    "AsyncBatch",
    "AsyncClient",
    "BadRequest",
    "Batch",
    "BroadcastResult",
    "Call",
    "Client",
    "ConnectionFailed",
    "Forbidden",
    "HistoryMessage",
    "HistoryResult",
    "NotFound",
    "NotSupported",
    "PresenceResult",
    "PresenceUser",
    "PublishResult",
    "RateLimited",
    "RequestTimedOut",
    "Retry",
    "RoomcastError",
    "ServerError",
    "Stats",
    "Unauthorized",
    "Unavailable",
]
