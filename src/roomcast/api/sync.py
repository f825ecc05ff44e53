"""`roomcast.api.Client`: the server API from blocking code (Django, Flask, Celery), on one
httpx connection pool; safe to share between threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

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

__all__ = ["Batch", "Client"]


class Client:
    """Calls a roomcast server's HTTP API (`base_url` is its HTTP listener, e.g.
    `http://127.0.0.1:8001`). Failed calls are retried as `retry` says; a publish carries
    an idempotency key, so a retry is never delivered twice. Close it (or use `with`).
    Safe to share between threads; with `coalesce=True` publishes made by several threads
    at once go together as `/api/batch` requests (at most `max_in_flight` at once)."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 10.0,
                 retry: Retry = DEFAULT_RETRY, max_connections: int = 10,
                 coalesce: bool = False, max_in_flight: int = 4,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.options = Options(base_url, api_key, timeout, retry, max_connections)
        self._http = httpx.Client(base_url=self.options.base_url, headers=self.options.headers,
                                  timeout=self.options.timeout, limits=self.options.limits,
                                  transport=transport)
        self._coalescer = ThreadCoalescer(self, max_in_flight) if coalesce else None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the pool's connections."""
        self._http.close()

    def call(self, call: Call) -> Any:
        """Send one call, retrying as the options say; its result or its ApiError."""
        attempt = 0
        while True:
            try:
                try:
                    response = self._http.request(**self.options.request_args(call))
                except httpx.TransportError as exc:
                    raise transport_error(exc, self.options.base_url + call.path) from exc
                return answer(call, response)
            except ApiError as error:
                delay = self.options.retry.delay(attempt, error) if may_retry(call, error) \
                    else None
                if delay is None:
                    raise
            attempt += 1
            time.sleep(delay)

    # ------------------------------------------------------------ the calls
    def publish(self, room: str, data: Any, *, event: str | None = None,
                idempotency_key: str | None = None) -> PublishResult:
        """Publish into a room; delivered once however many times it is retried."""
        call = Call.publish(room, data, event, idempotency_key)
        result: PublishResult = (self._coalescer.send(call) if self._coalescer
                                 else self.call(call))
        return result

    def broadcast(self, rooms: Sequence[str], data: Any, *,
                  event: str | None = None) -> BroadcastResult:
        """Publish the same message into several rooms."""
        result: BroadcastResult = self.call(Call.broadcast(rooms, data, event))
        return result

    def disconnect(self, user_id: str, *, code: int | None = None,
                   reason: str | None = None) -> int:
        """Close a user's connections; how many the answering node closed."""
        result: int = self.call(Call.disconnect(user_id, code, reason))
        return result

    def revoke(self, jti: str, *, expires_at: float | str | None = None) -> None:
        """Revoke a token id: its connections close with 4401, it cannot connect again."""
        self.call(Call.revoke(jti, expires_at))

    def subscribe(self, user_id: str, room: str, *, connection_id: str | None = None) -> int:
        """Subscribe a user's live connections to a room (server-side); how many."""
        result: int = self.call(Call.subscribe(user_id, room, connection_id))
        return result

    def unsubscribe(self, user_id: str, room: str, *, connection_id: str | None = None) -> int:
        """Unsubscribe a user's live connections from a room; how many."""
        result: int = self.call(Call.unsubscribe(user_id, room, connection_id))
        return result

    def presence(self, room: str) -> PresenceResult:
        """Who is in a room now."""
        result: PresenceResult = self.call(Call.presence(room))
        return result

    def history(self, room: str, *, since: int | None = None,
                limit: int | None = None) -> HistoryResult:
        """The messages a room's history keeps (after `since`, or the newest `limit`)."""
        result: HistoryResult = self.call(Call.history(room, since, limit))
        return result

    def stats(self) -> Stats:
        """The answering node's counts."""
        result: Stats = self.call(Call.stats())
        return result

    def batch(self) -> Batch:
        """Calls to send as one `/api/batch` request: add them, then `send()`."""
        return Batch(self)

    def send_batch(self, calls: Sequence[Call]) -> list[Any]:
        """Send `calls` as one batch; one result or ApiError per call, in order."""
        body: dict[str, Any] = self.call(batch_call(calls))
        return parse_batch(calls, body)


class Batch(Commands):
    """Commands for one `/api/batch` request of a blocking Client."""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self._client = client

    def send(self) -> list[Any]:
        """Send the commands; one result (or ApiError, not raised) per command, in order."""
        return self._client.send_batch(self.calls)


class _Entry:
    """One coalesced publish: taken by a flusher or waiting, then answered."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.taken = False
        self.done = threading.Event()
        self.woken = threading.Event()
        self.result: Any = None

    def answer(self, result: Any) -> None:
        self.result = result
        self.done.set()
        self.woken.set()


class ThreadCoalescer:
    """Group commit across threads, as `aio.Coalescer` does across tasks: a publish waits
    for a free slot; the thread that gets one sends every publish waiting then (its own
    first) as one batch and answers them all; a flusher that fails midway puts its
    publishes back (their idempotency keys make the resend safe)."""

    def __init__(self, client: Client, max_in_flight: int) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._pending: list[_Entry] = []
        self._slots = threading.BoundedSemaphore(max(1, max_in_flight))

    def send(self, call: Call) -> Any:
        """Publish `call` with whatever else is waiting; its own result (or raise)."""
        entry = _Entry(call)
        with self._lock:
            self._pending.append(entry)
        while not entry.done.is_set():
            with self._lock:
                woken = entry.woken if entry.taken else None
            if woken is not None:
                woken.wait()
                continue
            with self._slots:
                group = self._take(entry)
                if group:
                    self._flush(group)
        if isinstance(entry.result, ApiError):
            raise entry.result
        return entry.result

    def _take(self, first: _Entry) -> list[_Entry]:
        with self._lock:
            if first.taken or first.done.is_set():
                return []
            self._pending.remove(first)
            group = [first, *self._pending[:MAX_BATCH - 1]]
            del self._pending[:MAX_BATCH - 1]
            for entry in group:
                entry.taken = True
            return group

    def _flush(self, group: list[_Entry]) -> None:
        try:
            try:
                if len(group) == 1:
                    results: list[Any] = [self._client.call(group[0].call)]
                else:
                    results = self._client.send_batch([e.call for e in group])
            except ApiError as exc:
                results = [exc] * len(group)
            for entry, result in zip(group, results, strict=True):
                entry.answer(result)
        finally:
            with self._lock:
                unanswered = [e for e in group if not e.done.is_set()]
                for entry in unanswered:
                    entry.taken = False
                    woken, entry.woken = entry.woken, threading.Event()
                    woken.set()
                self._pending[:0] = unanswered
