"""`roomcast.api.AsyncClient`: the server API from async code (asyncio: FastAPI, Starlette;
or Trio), on one httpx connection pool, with optional coalescing of concurrent publishes
into `/api/batch` requests."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import anyio
import httpx

from roomcast.api.batch import MAX_BATCH, Commands, batch_call
from roomcast.api.calls import Call, Retry, parse_batch
from roomcast.api.errors import ApiError
from roomcast.api.http import DEFAULT_RETRY, Options, answer, may_retry, transport_error
from roomcast.api.results import (
    BroadcastResult,
    HistoryResult,
    PresenceResult,
    PublishResult,
    Stats,
)

__all__ = ["AsyncBatch", "AsyncClient"]


class AsyncClient:
    """Like `Client`, with `await`. With `coalesce=True`, publishes made while others are
    on the wire wait and go together as one `/api/batch` (at most `max_in_flight` batches
    at once): far more publishes per second from many concurrent tasks, each still
    answered with its own PublishResult or error."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 10.0,
                 retry: Retry = DEFAULT_RETRY, max_connections: int = 10,
                 coalesce: bool = False, max_in_flight: int = 4,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.options = Options(base_url, api_key, timeout, retry, max_connections)
        self._http = httpx.AsyncClient(base_url=self.options.base_url,
                                       headers=self.options.headers,
                                       timeout=self.options.timeout,
                                       limits=self.options.limits, transport=transport)
        self._coalescer = Coalescer(self, max_in_flight) if coalesce else None
        # Requests wait here rather than in httpx's pool, whose queue grows slow when
        # hundreds wait for a connection at once.
        self._slots = anyio.Semaphore(max_connections)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pool's connections."""
        await self._http.aclose()

    async def call(self, call: Call) -> Any:
        """Send one call, retrying as the options say; its result or its ApiError."""
        attempt = 0
        while True:
            try:
                try:
                    async with self._slots:
                        response = await self._http.request(**self.options.request_args(call))
                except httpx.TransportError as exc:
                    raise transport_error(exc, self.options.base_url + call.path) from exc
                return answer(call, response)
            except ApiError as error:
                delay = self.options.retry.delay(attempt, error) if may_retry(call, error) \
                    else None
                if delay is None:
                    raise
            attempt += 1
            await anyio.sleep(delay)

    # ------------------------------------------------------------ the calls
    async def publish(self, room: str, data: Any, *, event: str | None = None,
                      idempotency_key: str | None = None) -> PublishResult:
        """Publish into a room; delivered once however many times it is retried."""
        call = Call.publish(room, data, event, idempotency_key)
        result: PublishResult = (await self._coalescer.send(call) if self._coalescer
                                 else await self.call(call))
        return result

    async def broadcast(self, rooms: Sequence[str], data: Any, *,
                        event: str | None = None) -> BroadcastResult:
        """Publish the same message into several rooms."""
        result: BroadcastResult = await self.call(Call.broadcast(rooms, data, event))
        return result

    async def disconnect(self, user_id: str, *, code: int | None = None,
                         reason: str | None = None) -> int:
        """Close a user's connections; how many the answering node closed."""
        result: int = await self.call(Call.disconnect(user_id, code, reason))
        return result

    async def revoke(self, jti: str, *, expires_at: float | str | None = None) -> None:
        """Revoke a token id: its connections close with 4401, it cannot connect again."""
        await self.call(Call.revoke(jti, expires_at))

    async def subscribe(self, user_id: str, room: str, *,
                        connection_id: str | None = None) -> int:
        """Subscribe a user's live connections to a room (server-side); how many."""
        result: int = await self.call(Call.subscribe(user_id, room, connection_id))
        return result

    async def unsubscribe(self, user_id: str, room: str, *,
                          connection_id: str | None = None) -> int:
        """Unsubscribe a user's live connections from a room; how many."""
        result: int = await self.call(Call.unsubscribe(user_id, room, connection_id))
        return result

    async def presence(self, room: str) -> PresenceResult:
        """Who is in a room now."""
        result: PresenceResult = await self.call(Call.presence(room))
        return result

    async def history(self, room: str, *, since: int | None = None,
                      limit: int | None = None) -> HistoryResult:
        """The messages a room's history keeps (after `since`, or the newest `limit`)."""
        result: HistoryResult = await self.call(Call.history(room, since, limit))
        return result

    async def stats(self) -> Stats:
        """The answering node's counts."""
        result: Stats = await self.call(Call.stats())
        return result

    def batch(self) -> AsyncBatch:
        """Calls to send as one `/api/batch` request: add them, then `await send()`."""
        return AsyncBatch(self)

    async def send_batch(self, calls: Sequence[Call]) -> list[Any]:
        """Send `calls` as one batch; one result or ApiError per call, in order."""
        body: dict[str, Any] = await self.call(batch_call(calls))
        return parse_batch(calls, body)


class AsyncBatch(Commands):
    """Commands for one `/api/batch` request of an AsyncClient."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__()
        self._client = client

    async def send(self) -> list[Any]:
        """Send the commands; one result (or ApiError, not raised) per command, in order."""
        return await self._client.send_batch(self.calls)


class _Entry:
    """One coalesced publish: taken by a flusher or waiting, then answered."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.taken = False
        self.done = False
        self.result: Any = None
        self.woken = anyio.Event()

    def answer(self, result: Any) -> None:
        self.done, self.result = True, result
        self.woken.set()


class Coalescer:
    """Group commit, without a background task: a publish waits for a free slot; whoever
    gets one sends every publish waiting then (its own first) as one batch and answers
    them all. A flusher cancelled or failed midway puts its publishes back (their
    idempotency keys make the resend safe)."""

    def __init__(self, client: AsyncClient, max_in_flight: int) -> None:
        self._client = client
        self._pending: list[_Entry] = []
        self._slots = anyio.Semaphore(max(1, max_in_flight))

    async def send(self, call: Call) -> Any:
        """Publish `call` with whatever else is waiting; its own result (or raise)."""
        entry = _Entry(call)
        self._pending.append(entry)
        while not entry.done:
            if entry.taken:
                await entry.woken.wait()
                continue
            async with self._slots:
                if not entry.taken and not entry.done:
                    await self._flush(entry)
        if isinstance(entry.result, ApiError):
            raise entry.result
        return entry.result

    async def _flush(self, first: _Entry) -> None:
        self._pending.remove(first)
        group = [first, *self._pending[:MAX_BATCH - 1]]
        del self._pending[:MAX_BATCH - 1]
        for entry in group:
            entry.taken = True
        try:
            try:
                if len(group) == 1:
                    results: list[Any] = [await self._client.call(first.call)]
                else:
                    results = await self._client.send_batch([e.call for e in group])
            except ApiError as exc:
                results = [exc] * len(group)
            for entry, result in zip(group, results, strict=True):
                entry.answer(result)
        finally:
            unanswered = [e for e in group if not e.done]
            for entry in unanswered:
                entry.taken = False
                woken, entry.woken = entry.woken, anyio.Event()
                woken.set()
            self._pending[:0] = unanswered
