"""The Client: one logical roomcast connection that survives reconnects, with the commands
an app uses, and `connect()`, the context manager that runs one."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio

from roomcast.client.backoff import DEFAULT_BACKOFF, Backoff
from roomcast.client.errors import ConnectError, ConnectionLost, Disconnected, RequestTimeout
from roomcast.client.events import (
    CloseInfo,
    Event,
    State,
    SubscribeResult,
)
from roomcast.client.lifecycle import BY_THE_CLIENT, Lifecycle, Waiter
from roomcast.client.session import MAX_ROOMS, Filters
from roomcast.client.tokens import TokenSource
from roomcast.codes import CloseCode

__all__ = ["Client", "connect"]


class Client(Lifecycle):
    """A roomcast connection that reconnects by itself. Made by `connect()`."""

    # ------------------------------------------------------------ the public commands
    async def subscribe(
        self, rooms: str | Sequence[str], *, since: Mapping[str, Any] | None = None,
        events: Sequence[str] | None = None, where: Mapping[str, Any] | None = None,
        presence: bool = False, timeout: float | None = None,
    ) -> dict[str, SubscribeResult]:
        """Subscribe to rooms and return each room's result once the server answered.

        The subscription is kept: after a reconnect it is made again with `since`, so
        messages still in history are not lost. `since` ({room: Position or
        {"offset", "epoch"}}) resumes from a position the app saved itself.
        """
        names = [rooms] if isinstance(rooms, str) else list(rooms)
        if not 1 <= len(names) <= MAX_ROOMS:
            raise ValueError(f"subscribe takes 1 to {MAX_ROOMS} rooms")
        if self.stopped is not None:
            raise Disconnected(self.stopped.code, self.stopped.reason)
        filters = Filters.make(events, where, presence)
        resume = self._book.keep(names, filters, since)
        waiters: dict[str, Waiter] = {}
        for room in names:
            waiters[room] = waiter = Waiter()
            self._waiters.setdefault(room, []).append(waiter)
        link = self._link
        if link is not None and self.state == State.CONNECTED:
            with suppress(ConnectionLost):  # else the resubscribe after the reconnect answers
                await self._send_subscribe(link, names, filters, resume)
        timeout = self.request_timeout if timeout is None else timeout
        with trio.move_on_after(timeout):
            for waiter in waiters.values():
                await waiter.done.wait()
        out: dict[str, SubscribeResult] = {}
        for room, waiter in waiters.items():
            if waiter.error is not None:
                raise waiter.error
            if waiter.result is None:
                raise RequestTimeout(f"no subscribed reply for {room} within {timeout} s "
                                     "(the subscription is kept and retried on reconnect)")
            out[room] = waiter.result
        return out

    async def messages(self) -> AsyncIterator[Event]:
        """Messages, presence events, direct frames, resume outcomes (Recovery) and stream
        resets (Reset), in order.

        Read them: when the app falls behind by `max_buffer` events the client stops
        reading the socket, and the server will close it as too slow (4409) and it
        resumes. Raises Disconnected when the client stopped for good on a server's word;
        ends when the app closed it."""
        while True:
            try:
                event = await self._events_receive.receive()
            except trio.EndOfChannel:
                if self.stopped is not None and not self._closing:
                    raise Disconnected(self.stopped.code, self.stopped.reason) from None
                return
            yield event

    async def aclose(self) -> None:
        """Close for good (code 1000); messages() ends, later commands raise Disconnected."""
        self._closing = True
        link = self._link
        if link is not None:
            link.end(CloseInfo(CloseCode.NORMAL, BY_THE_CLIENT))  # it closes the socket
        else:
            self._run_scope.cancel()  # waiting or connecting: nothing to close politely
        with trio.move_on_after(2.0) as scope:
            scope.shield = True
            await self._finished.wait()


@asynccontextmanager
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
    """A connected Client for the length of the block (closed at its end).

    `token` is a JWT, or a function (sync or async) returning one: it is asked on every
    connect and before the token expires, so it can hand out fresh ones. `wait` seconds
    for the first connection (ConnectError after; None waits forever, 0 not at all);
    a stop code on the first try raises Disconnected.
    """
    client = Client(url, token, backoff=backoff, connect_timeout=connect_timeout,
                    request_timeout=request_timeout, publish_timeout=publish_timeout,
                    ping_interval=ping_interval, ping_timeout=ping_timeout,
                    refresh_before=refresh_before, max_buffer=max_buffer,
                    max_message_size=max_message_size, on_state=on_state)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            try:
                if wait != 0:
                    await _first_connection(client, wait)
                yield client
            finally:
                await client.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery is ours, not the caller's: give back the one error as it was raised.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def _first_connection(client: Client, wait: float | None) -> None:
    """Wait `wait` seconds (None: for ever) for the client to connect; Disconnected or
    ConnectError when it did not."""
    with trio.move_on_after(math.inf if wait is None else wait):
        await client.wait_state(State.CONNECTED, State.DISCONNECTED)
    if client.stopped is not None:
        raise Disconnected(client.stopped.code, client.stopped.reason)
    if client.state != State.CONNECTED:
        last = client.last_close
        raise ConnectError(
            f"could not connect to {client.url} within {wait} s"
            + (f" (last: {int(last.code)} {last.reason})" if last else "")
        )
