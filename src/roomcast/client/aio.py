"""The asyncio client: the same logical connection as `roomcast.client` (reconnects by the
close codes, resubscribes with `since`, follows resets, resends unanswered publishes with
their idempotency key, refreshes the token, drops dead links), for asyncio apps (FastAPI,
plain asyncio services), on the `websockets` library (the `client` extra).

    from roomcast.client import aio

    async with aio.connect("ws://127.0.0.1:8000/ws", get_token) as client:
        await client.subscribe("project:12")
        async for event in client.messages():
            print(event)

Same methods, attributes, events and errors as the Trio client (docs/clients.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from roomcast.client.aiolife import BY_THE_CLIENT, Lifecycle
from roomcast.client.aiolink import EndOfEvents
from roomcast.client.backoff import DEFAULT_BACKOFF, Backoff
from roomcast.client.errors import ConnectError, ConnectionLost, Disconnected, RequestTimeout
from roomcast.client.events import (
    CloseInfo,
    Event,
    State,
    SubscribeResult,
)
from roomcast.client.session import MAX_ROOMS, Filters
from roomcast.client.tokens import TokenSource
from roomcast.codes import CloseCode

__all__ = ["Client", "connect"]


class Client(Lifecycle):
    """A roomcast connection that reconnects by itself, for asyncio. Made by `connect()`."""

    async def subscribe(
        self, rooms: str | Sequence[str], *, since: Mapping[str, Any] | None = None,
        events: Sequence[str] | None = None, where: Mapping[str, Any] | None = None,
        presence: bool = False, timeout: float | None = None,
    ) -> dict[str, SubscribeResult]:
        """Subscribe to rooms and return each room's result once the server answered. Kept
        across reconnects (made again with `since`); `since` ({room: Position or
        {"offset", "epoch"}}) resumes from a position the app saved itself."""
        names = [rooms] if isinstance(rooms, str) else list(rooms)
        if not 1 <= len(names) <= MAX_ROOMS:
            raise ValueError(f"subscribe takes 1 to {MAX_ROOMS} rooms")
        if self.stopped is not None:
            raise Disconnected(self.stopped.code, self.stopped.reason)
        filters = Filters.make(events, where, presence)
        resume = self._book.keep(names, filters, since)
        loop = asyncio.get_running_loop()
        waiters: dict[str, asyncio.Future[SubscribeResult]] = {}
        for room in names:
            waiters[room] = waiter = loop.create_future()
            self._waiters.setdefault(room, []).append(waiter)
        link = self._link
        if link is not None and self.state == State.CONNECTED:
            with contextlib.suppress(ConnectionLost):  # else the resubscribe answers
                await self._send_subscribe(link, names, filters, resume)
        timeout = self.request_timeout if timeout is None else timeout
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.wait(list(waiters.values()))
        out: dict[str, SubscribeResult] = {}
        for room, waiter in waiters.items():
            if not waiter.done():
                waiter.cancel()
                raise RequestTimeout(f"no subscribed reply for {room} within {timeout} s "
                                     "(the subscription is kept and retried on reconnect)")
            out[room] = waiter.result()  # raises the refusal or Disconnected
        return out

    async def messages(self) -> AsyncIterator[Event]:
        """Messages, presence events, direct frames, resume outcomes (Recovery) and stream
        resets (Reset), in order. Read them: `max_buffer` events behind, the client stops
        reading the socket (and the server closes it 4409; it resumes). Raises
        Disconnected when the client stopped on a server's word; ends after aclose()."""
        while True:
            try:
                event = await self._mailbox.get()
            except EndOfEvents:
                if self.stopped is not None and not self._closing:
                    raise Disconnected(self.stopped.code, self.stopped.reason) from None
                return
            yield event

    async def aclose(self) -> None:
        """Close for good (code 1000); messages() ends, later commands raise Disconnected."""
        self._closing = True
        link, task = self._link, self._task
        if link is not None:
            link.end(CloseInfo(CloseCode.NORMAL, BY_THE_CLIENT))  # it closes the socket
        elif task is not None:
            task.cancel()  # waiting or connecting: nothing to close politely
        if task is not None:
            done, _ = await asyncio.wait([task], timeout=2.0)
            if not done:
                task.cancel()
                await asyncio.wait([task], timeout=1.0)
        if self.stopped is None:
            self._stop(CloseInfo(CloseCode.NORMAL, BY_THE_CLIENT))


@contextlib.asynccontextmanager
async def connect(
    url: str,
    token: TokenSource,
    *,
    wait: float | None = 30.0,
    backoff: Backoff = DEFAULT_BACKOFF,
    connect_timeout: float = 10.0,
    request_timeout: float = 10.0,
    publish_timeout: float = 60.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float = 10.0,
    refresh_before: float = 30.0,
    max_buffer: int = 1000,
    max_message_size: int = 16 * 1024 * 1024,
    on_state: Callable[[State, CloseInfo | None], None] | None = None,
) -> AsyncIterator[Client]:
    """A connected Client for the length of the block (closed at its end), run by a task
    of the current event loop. `token` and `wait` as for `roomcast.client.connect`."""
    client = Client(url, token, backoff=backoff, connect_timeout=connect_timeout,
                    request_timeout=request_timeout, publish_timeout=publish_timeout,
                    ping_interval=ping_interval, ping_timeout=ping_timeout,
                    refresh_before=refresh_before, max_buffer=max_buffer,
                    max_message_size=max_message_size, on_state=on_state)
    client._task = asyncio.create_task(client.run(), name=f"roomcast client {url}")
    try:
        if wait != 0:
            await _first_connection(client, wait)
        yield client
    finally:
        await client.aclose()


async def _first_connection(client: Client, wait: float | None) -> None:
    """Wait `wait` seconds (None: for ever) for the client to connect; Disconnected or
    ConnectError when it did not."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            await client.wait_state(State.CONNECTED, State.DISCONNECTED)
    if client.stopped is not None:
        raise Disconnected(client.stopped.code, client.stopped.reason)
    if client.state != State.CONNECTED:
        last = client.last_close
        raise ConnectError(
            f"could not connect to {client.url} within {wait} s"
            + (f" (last: {int(last.code)} {last.reason})" if last else "")
        )
