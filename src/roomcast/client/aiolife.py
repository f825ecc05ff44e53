"""The life of an asyncio client's connection: get a token, connect, resubscribe, read and
route frames, refresh the token, and after a loss come back (or stop) as the close code
says. Every decision is the shared core's (`session`, `rules`, `backoff`); this module
only does the IO and the waiting, on asyncio. `aio.Client` adds the public commands."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from roomcast.client.aiolink import (
    Link,
    Mailbox,
    open_websocket,
    read_frames,
    watch_pings,
)
from roomcast.client.backoff import DEAD_LINK, DEFAULT_BACKOFF, Backoff
from roomcast.client.commands import Commands
from roomcast.client.errors import (
    CommandError,
    ConnectionLost,
    Disconnected,
    RequestTimeout,
)
from roomcast.client.events import (
    CloseInfo,
    Event,
    Position,
    State,
    SubscribeResult,
)
from roomcast.client.outbox import Outbox
from roomcast.client.rules import (
    Next,
    after_close,
    inbound,
    read_hello,
    refresh_wait,
    subscribe_frame,
)
from roomcast.client.session import Filters, Session
from roomcast.client.tokens import TokenSource, token_expiry
from roomcast.codes import CloseCode

__all__ = ["BY_THE_CLIENT", "Lifecycle"]

logger = logging.getLogger("roomcast.client")

BY_THE_CLIENT = "closed by the client"


class Lifecycle(Commands):
    """An asyncio client's connection loop and the state it keeps; `aio.Client` is what
    apps use."""

    def __init__(self, url: str, token: TokenSource, *, backoff: Backoff = DEFAULT_BACKOFF,
                 connect_timeout: float = 10.0, request_timeout: float = 10.0,
                 publish_timeout: float = 60.0, ping_interval: float | None = 20.0,
                 ping_timeout: float = 10.0, refresh_before: float = 30.0,
                 max_buffer: int = 1000, max_message_size: int = 16 * 1024 * 1024,
                 on_state: Callable[[State, CloseInfo | None], None] | None = None) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"the URL must start with ws:// or wss://, got {url!r}")
        if not token:
            raise ValueError("a token is required: a JWT string, or a function returning one")
        self.url, self.backoff = url, backoff
        self.connect_timeout, self.request_timeout = connect_timeout, request_timeout
        self.publish_timeout, self.refresh_before = publish_timeout, refresh_before
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.max_message_size, self.on_state = max_message_size, on_state
        self.state = State.CONNECTING
        self.token: str | None = None
        self.connection: dict[str, Any] | None = None
        self.last_close: CloseInfo | None = None
        self.stopped: Disconnected | None = None
        self._token_source = token
        self._next_token: str | None = None
        self._book = Session()
        self._waiters: dict[str, list[asyncio.Future[SubscribeResult]]] = {}
        self._link: Link | None = None
        self._changed = asyncio.Event()
        self._outbox = Outbox()  # commands not yet answered, across connections
        self._calls: dict[int, asyncio.Future[dict[str, Any]]] = {}  # their callers
        self._attempt = 0
        self._skew = 0.0
        self._closing = False
        self._mailbox = Mailbox(max_buffer)
        self._task: asyncio.Task[None] | None = None  # run(), started by connect()

    # ------------------------------------------------------------ state
    def _set_state(self, state: State, close: CloseInfo | None = None) -> None:
        if state == self.state:
            return
        self.state = state
        self._changed.set()
        self._changed = asyncio.Event()
        if self.on_state is not None:
            self.on_state(state, close)

    async def wait_state(self, *states: State) -> State:
        """Return once the client is in one of `states` (now or later)."""
        while self.state not in states:
            await self._changed.wait()
        return self.state

    # ------------------------------------------------------------ the connection loop
    def _clock(self) -> float:
        return asyncio.get_running_loop().time()

    async def run(self) -> None:
        """Connect, and reconnect after every loss, until aclose() or a stop code."""
        try:
            while not self._closing:
                try:
                    self.token = token = await self._token()
                except Exception as exc:
                    logger.warning("could not get a token: %s", exc)
                    close = CloseInfo(CloseCode.ABNORMAL, f"no token: {exc}")
                else:
                    close = await self._connect_once(token)
                self.last_close = close
                if self._closing:
                    break
                decision = after_close(close.code, callable(self._token_source))
                if decision == Next.ASK_TOKEN and not await self._new_token_after_4401():
                    decision = Next.STOP
                if decision == Next.STOP:
                    self._stop(close)
                    return
                delay = self.backoff.delay(self._attempt, close.code)
                self._attempt += 1
                logger.info("connection closed (%s %s); reconnecting in %.2f s",
                            int(close.code), close.reason, delay)
                self._set_state(State.RECONNECTING, close)
                await asyncio.sleep(delay)
        finally:
            if self.stopped is None:
                self._stop(CloseInfo(CloseCode.NORMAL, BY_THE_CLIENT))

    async def _new_token_after_4401(self) -> bool:
        """After 4401: True (and keep it) when the token function has a different token."""
        try:
            fresh = await self._token()
        except Exception as exc:
            logger.warning("could not get a new token after 4401: %s", exc)
            return False
        if fresh == self.token:
            return False
        self._next_token = fresh
        return True

    def _stop(self, close: CloseInfo) -> None:
        self.stopped = Disconnected(close.code, close.reason)
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(self.stopped)
        self._waiters.clear()
        for call in self._calls.values():
            if not call.done():
                call.set_exception(self.stopped)
        self._calls.clear()
        self._outbox.pending.clear()
        self._mailbox.close()
        self._set_state(State.DISCONNECTED, close)

    async def _connect_once(self, token: str) -> CloseInfo:
        """One connection from handshake to close; returns why it ended."""
        opened = await open_websocket(self.url, token, self.connect_timeout,
                                      self.max_message_size)
        if isinstance(opened, CloseInfo):
            return opened
        ws, first = opened
        hello = read_hello(first, time.time())
        link = Link(ws)
        tasks: list[asyncio.Task[None]] = []
        try:
            if hello is None:
                link.end(CloseInfo(CloseCode.PROTOCOL_VIOLATION,
                                   "the server's first frame was not `connected`"))
                return link.close or CloseInfo(CloseCode.PROTOCOL_VIOLATION, "")
            self.connection, self._skew, self._attempt = hello.connection, hello.skew, 0
            self._book.new_connection()
            tasks.append(asyncio.create_task(read_frames(link, self._dispatch)))
            with contextlib.suppress(ConnectionLost):  # else the reader sees the close
                for filters, rooms, since in self._book.resubscribe():
                    await self._send_subscribe(link, rooms, filters, since)
                self._link = link
                for pending in self._outbox.connected():  # unanswered publishes, again
                    await link.send(pending.frame)
                    self._outbox.sent(pending)
                self._set_state(State.CONNECTED)
                tasks.append(asyncio.create_task(watch_pings(
                    link, self.ping_interval, self.ping_timeout, self._outbox.next_id)))
                tasks.append(asyncio.create_task(self._refresher(link)))
            await link.ended.wait()
            return link.close or CloseInfo(CloseCode.ABNORMAL, "the connection ended")
        finally:
            self._link = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for pending in self._outbox.lost():
                call = self._calls.pop(pending.id, None)
                if call is not None and not call.done():
                    call.set_exception(ConnectionLost(
                        f"the connection closed before the reply to {pending.frame['type']}"))
            await self._close_socket(link)

    async def _close_socket(self, link: Link) -> None:
        # A dead link never finishes a closing handshake: do not wait for one.
        if link.close is not None and link.close.code == DEAD_LINK:
            link.ws.transport.abort()
            return
        code, reason = ((CloseCode.NORMAL, BY_THE_CLIENT) if self._closing
                        else (CloseCode.NORMAL, ""))
        try:
            async with asyncio.timeout(1.0):
                await link.ws.close(code, reason)
        except TimeoutError:
            link.ws.transport.abort()

    # ------------------------------------------------------------ frames in
    async def _hand_off(self, link: Link, event: Event) -> None:
        """Give an event to messages(); waits while the app is behind (backpressure)."""
        link.handing_off = True
        try:
            await self._mailbox.put(event)
        finally:
            link.handing_off = False

    async def _dispatch(self, link: Link, frame: dict[str, Any]) -> None:
        todo = inbound(self._book, frame)
        for result in todo.results:
            for waiter in self._waiters.pop(result.room, []):
                if not waiter.done():
                    waiter.set_result(result)
        if todo.error is not None:
            for room in todo.refused:
                waiters = self._waiters.pop(room, [])
                if waiters:
                    self._book.subs.pop(room, None)  # a fresh subscribe refused outright
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(todo.error)
        if todo.reply is not None:
            answered = self._outbox.reply(todo.reply["id"])
            call = self._calls.pop(answered.id, None) if answered is not None else None
            if call is not None and not call.done():
                call.set_result(todo.reply)
            elif answered is None and todo.reply.get("type") == "error":
                logger.warning("server error: %s %s", frame.get("code"), frame.get("message"))
        if todo.warning is not None:
            logger.warning("%s", todo.warning)
        for event in todo.events:
            await self._hand_off(link, event)

    # ------------------------------------------------------------ frames out
    async def _send_subscribe(self, link: Link, rooms: list[str], filters: Filters,
                              since: dict[str, Position]) -> None:
        command_id = self._outbox.next_id()
        self._book.sent_subscribe(command_id, rooms, since)
        await link.send(subscribe_frame(command_id, rooms, filters, since))

    async def _request(self, frame: dict[str, Any], timeout: float | None = None, *,
                       resend: bool = False) -> dict[str, Any]:
        """Send a command (now, or on the next connection) and return its reply; raise
        CommandError for an `error`. `resend`: sent again on every new connection until
        answered (else ConnectionLost when its connection closes first)."""
        if self.stopped is not None:
            raise Disconnected(self.stopped.code, self.stopped.reason)
        timeout = self.request_timeout if timeout is None else timeout
        pending = self._outbox.add(frame, resend=resend)
        call: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._calls[pending.id] = call
        try:
            async with asyncio.timeout(None if math.isinf(timeout) else timeout):
                link = self._link
                if self._outbox.up and link is not None:
                    with contextlib.suppress(ConnectionLost):  # the next connection sends it
                        await link.send(pending.frame)
                        self._outbox.sent(pending)
                reply = await call
        except TimeoutError:
            raise RequestTimeout(f"no reply to {frame['type']} within {timeout} s") from None
        finally:
            if not call.done():
                self._outbox.drop(pending)
                self._calls.pop(pending.id, None)
        if reply.get("type") == "error":
            raise CommandError(str(reply.get("code")), str(reply.get("message")))
        return reply

    # ------------------------------------------------------------ the token's life
    async def _refresher(self, link: Link) -> None:
        """Refresh the token on `link` shortly before it expires, for as long as the token
        function hands out new ones."""
        if not callable(self._token_source):
            return
        while True:
            token = self.token or ""
            wait = refresh_wait(token, time.time() + self._skew, self.refresh_before)
            exp = token_expiry(token)
            if wait is None or exp is None:
                return
            await asyncio.sleep(wait)
            fresh = await self._fresh_token(exp)
            if fresh is None:
                return
            try:
                await self._refresh_on(fresh)
            except CommandError as exc:
                logger.warning("token refresh refused: %s", exc)
                return
            except (ConnectionLost, RequestTimeout):
                return

    async def _fresh_token(self, exp: float) -> str | None:
        """A token other than the current one, asking again halfway to `exp` while the
        token function has nothing newer; None when it fails or time runs out."""
        while True:
            try:
                fresh = await self._token()
            except Exception as exc:
                logger.warning("could not refresh the token: %s", exc)
                return None
            if fresh != self.token:
                return fresh
            left = exp - (time.time() + self._skew)
            if left <= 2:
                return None  # nothing newer: the server will close with 4401
            await asyncio.sleep(left / 2)
