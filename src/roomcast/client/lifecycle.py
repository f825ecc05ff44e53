"""The life of a client's connection: get a token, connect, resubscribe, read and route
frames, refresh the token, and after a loss come back (or stop) as the close code says.
The Client adds the public commands on top; the rules live beside it: `session` (rooms
and positions), `backoff` (when to come back), `transport` (the WebSocket IO)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from roomcast.client.backoff import DEAD_LINK, DEFAULT_BACKOFF, Backoff
from roomcast.client.commands import Commands
from roomcast.client.errors import (
    CommandError,
    ConnectionLost,
    Disconnected,
    RequestTimeout,
    RoomcastError,
)
from roomcast.client.events import (
    CloseInfo,
    Event,
    Position,
    Reset,
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
from roomcast.client.transport import (
    Call,
    Link,
    closed,
    open_websocket,
    read_frames,
    watch_pings,
)
from roomcast.codes import CloseCode

__all__ = ["BY_THE_CLIENT", "Lifecycle", "Waiter"]

logger = logging.getLogger("roomcast.client")

BY_THE_CLIENT = "closed by the client"


@dataclass(eq=False)
class Waiter:
    """Waits for a room's entry in some `subscribed` reply."""

    done: trio.Event = field(default_factory=trio.Event)
    result: SubscribeResult | None = None
    error: RoomcastError | None = None


class Lifecycle(Commands):
    """A client's connection loop and the state it keeps; `Client` is what apps use."""

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
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
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"the URL must start with ws:// or wss://, got {url!r}")
        if not token:
            raise ValueError("a token is required: a JWT string, or a function returning one")
        self.url = url
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.publish_timeout = publish_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.refresh_before = refresh_before
        self.max_message_size = max_message_size
        self.on_state = on_state
        self.state = State.CONNECTING
        self.token: str | None = None  # the token of the live (or last) connection
        self.connection: dict[str, Any] | None = None  # the server's `connected` frame
        self.last_close: CloseInfo | None = None
        self.stopped: Disconnected | None = None  # why the client stopped for good
        self._token_source = token
        self._next_token: str | None = None
        self._book = Session()
        self._waiters: dict[str, list[Waiter]] = {}
        self._link: Link | None = None
        self._state_changed = trio.Event()
        self._outbox = Outbox()  # commands not yet answered, across connections
        self._calls: dict[int, Call] = {}  # their callers
        self._attempt = 0
        self._skew = 0.0  # server clock minus ours, seconds
        self._closing = False
        self._run_scope = trio.CancelScope()
        self._finished = trio.Event()
        self._events_send, self._events_receive = trio.open_memory_channel[Event](max_buffer)

    # ------------------------------------------------------------ state
    def _set_state(self, state: State, close: CloseInfo | None = None) -> None:
        if state == self.state:
            return
        self.state = state
        self._state_changed.set()
        self._state_changed = trio.Event()
        if self.on_state is not None:
            self.on_state(state, close)

    async def wait_state(self, *states: State) -> State:
        """Return once the client is in one of `states` (now or later)."""
        while self.state not in states:
            await self._state_changed.wait()
        return self.state

    # ------------------------------------------------------------ the connection loop
    def _clock(self) -> float:
        return trio.current_time()

    async def run(self) -> None:
        """Connect, and reconnect after every loss, until close() or a stop code."""
        try:
            with self._run_scope:
                await self._run()
        finally:
            if self.stopped is None:
                self._stop(CloseInfo(CloseCode.NORMAL, BY_THE_CLIENT))
            self._finished.set()

    async def _run(self) -> None:
        while not self._closing:
            try:
                token = await self._token()
            except Exception as exc:
                logger.warning("could not get a token: %s", exc)
                close = CloseInfo(CloseCode.ABNORMAL, f"no token: {exc}")
            else:
                self.token = token
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
            await trio.sleep(delay)

    async def _new_token_after_4401(self) -> bool:
        """After 4401: True (and keep it) when the token function has a different token."""
        if not callable(self._token_source):
            return False
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
                waiter.error = self.stopped
                waiter.done.set()
        self._waiters.clear()
        for call in self._calls.values():
            call.error = self.stopped
            call.done.set()
        self._calls.clear()
        self._outbox.pending.clear()
        self._events_send.close()
        self._set_state(State.DISCONNECTED, close)

    async def _connect_once(self, token: str) -> CloseInfo:
        """One connection from handshake to close; returns why it ended."""
        async with trio.open_nursery() as nursery:
            opened = await open_websocket(nursery, self.url, token, self.connect_timeout,
                                          self.max_message_size)
            if isinstance(opened, CloseInfo):
                nursery.cancel_scope.cancel()
                return opened
            ws, first = opened
            close = CloseInfo(CloseCode.ABNORMAL, "the connection failed")
            try:
                close = await self._serve(ws, first)
                return close
            finally:
                self._link = None
                # A dead link never finishes a closing handshake: do not wait for one.
                with trio.move_on_after(0.1 if close.code == DEAD_LINK else 1.0) as scope:
                    scope.shield = True
                    if self._closing:
                        await ws.aclose(CloseCode.NORMAL, BY_THE_CLIENT)
                    else:
                        await ws.aclose()
                nursery.cancel_scope.cancel()

    def _hello(self, first: str | bytes) -> bool:
        """Take in the server's first frame; False when it is not `connected`."""
        hello = read_hello(first, time.time())
        if hello is None:
            return False
        self.connection, self._skew = hello.connection, hello.skew
        self._attempt = 0
        return True

    async def _serve(self, ws: WebSocketConnection, first: str | bytes) -> CloseInfo:
        if not self._hello(first):
            return CloseInfo(CloseCode.PROTOCOL_VIOLATION,
                             "the server's first frame was not `connected`")
        self._book.new_connection()
        with trio.CancelScope() as scope:
            link = Link(ws, scope)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_frames, link, self._dispatch)
                    try:
                        await self._resubscribe(link)
                    except ConnectionLost:
                        pass  # the reader sees the close and ends the link
                    else:
                        self._link = link
                        self._set_state(State.CONNECTED)
                        nursery.start_soon(watch_pings, link, self.ping_interval,
                                           self.ping_timeout, self._outbox.next_id)
                        nursery.start_soon(self._refresher, link)
            finally:
                self._link = None
                self._lose_calls()
        if link.close is None:
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                return closed(exc)
            return CloseInfo(CloseCode.ABNORMAL, "the connection ended")
        return link.close

    # ------------------------------------------------------------ frames in
    async def _hand_off(self, link: Link, event: Event) -> None:
        """Give an event to messages(); waits while the app is behind (backpressure)."""
        link.handing_off = True
        try:
            await self._events_send.send(event)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            link.handing_off = False

    async def _dispatch(self, link: Link, frame: dict[str, Any]) -> None:
        todo = inbound(self._book, frame)
        for result in todo.results:
            for waiter in self._waiters.pop(result.room, []):
                waiter.result = result
                waiter.done.set()
        if todo.error is not None:
            self._refuse(todo.refused, todo.error)
        if todo.reply is not None:
            answered = self._outbox.reply(todo.reply["id"])
            call = self._calls.pop(answered.id, None) if answered is not None else None
            if call is not None:
                call.reply = todo.reply
                call.done.set()
            elif answered is None and todo.reply.get("type") == "error":
                logger.warning("server error: %s %s", frame.get("code"), frame.get("message"))
        if todo.warning is not None:
            logger.warning("%s", todo.warning)
        for event in todo.events:
            if isinstance(event, Reset):
                logger.info("%s: the stream was reset (epoch %s, offset %d, missed %s)",
                            event.room, event.epoch, event.offset, event.missed)
            await self._hand_off(link, event)

    def _refuse(self, rooms: list[str], error: CommandError) -> None:
        """A subscribe refused with an `error`: fail its waiters."""
        for room in rooms:
            waiters = self._waiters.pop(room, [])
            if waiters:
                self._book.subs.pop(room, None)  # a fresh subscribe the server refused outright
            for waiter in waiters:
                waiter.error = error
                waiter.done.set()
        logger.warning("subscribe of %s refused: %s", ", ".join(rooms), error)

    # ------------------------------------------------------------ frames out
    async def _send_subscribe(self, link: Link, rooms: list[str], filters: Filters,
                              since: dict[str, Position]) -> None:
        command_id = self._outbox.next_id()
        self._book.sent_subscribe(command_id, rooms, since)
        await link.send(subscribe_frame(command_id, rooms, filters, since))

    async def _resubscribe(self, link: Link) -> None:
        """Every kept room, with `since` where a position is known; then the commands that
        wait for a connection (unanswered publishes, again, with the same key)."""
        for filters, rooms, since in self._book.resubscribe():
            await self._send_subscribe(link, rooms, filters, since)
        self._link = link
        for pending in self._outbox.connected():
            await link.send(pending.frame)
            self._outbox.sent(pending)

    def _lose_calls(self) -> None:
        """The connection closed: fail the commands that will not be sent again."""
        for pending in self._outbox.lost():
            call = self._calls.pop(pending.id, None)
            if call is not None:
                call.lost = True
                call.done.set()

    async def _request(self, frame: dict[str, Any], timeout: float | None = None, *,
                       resend: bool = False) -> dict[str, Any]:
        """Send a command (now, or on the next connection) and return its reply; raise
        CommandError for an `error`. `resend`: sent again on every new connection until
        answered (else ConnectionLost when its connection closes first)."""
        if self.stopped is not None:
            raise Disconnected(self.stopped.code, self.stopped.reason)
        timeout = self.request_timeout if timeout is None else timeout
        pending = self._outbox.add(frame, resend=resend)
        self._calls[pending.id] = call = Call()
        try:
            with trio.move_on_after(timeout) as scope:
                link = self._link
                if self._outbox.up and link is not None:
                    with suppress(ConnectionLost):  # the next connection sends it
                        await link.send(pending.frame)
                        self._outbox.sent(pending)
                await call.done.wait()
        finally:
            if not call.done.is_set():
                self._outbox.drop(pending)
                self._calls.pop(pending.id, None)
        if scope.cancelled_caught and not call.done.is_set():
            raise RequestTimeout(f"no reply to {frame['type']} within {timeout} s")
        if call.error is not None:
            raise call.error
        if call.lost:
            raise ConnectionLost(f"the connection closed before the reply to {frame['type']}")
        reply = call.reply or {}
        if reply.get("type") == "error":
            raise CommandError(str(reply.get("code")), str(reply.get("message")))
        return reply

    # ------------------------------------------------------------ the token's life
    def _server_now(self) -> float:
        return time.time() + self._skew

    async def _refresher(self, link: Link) -> None:
        """Refresh the token on `link` shortly before it expires, for as long as the token
        function hands out new ones."""
        if not callable(self._token_source):
            return
        while True:
            token = self.token or ""
            wait = refresh_wait(token, self._server_now(), self.refresh_before)
            exp = token_expiry(token)
            if wait is None or exp is None:
                return
            await trio.sleep(wait)
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
            left = exp - self._server_now()
            if left <= 2:
                return None  # nothing newer: the server will close with 4401
            await trio.sleep(left / 2)
