"""The connection actor: one task per admitted WebSocket, supervised by the front door's
nursery. It reads frames and hands each text frame to the Router; its mailbox carries
the Router's frames back out. Whatever goes wrong in here closes this connection (4500,
logged, counted) and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

import trio

from roomcast import transport
from roomcast import websocket as ws
from roomcast.codes import CloseCode
from roomcast.core import Peer
from roomcast.limits import HeldBytesBudget, MessageClock
from roomcast.log import event
from roomcast.mailbox import ChannelMailbox, DirectMailbox, Mailbox
from roomcast.router import Router

# closes logged at debug level only: nothing went wrong
_ORDINARY = frozenset({CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.ABNORMAL})


class Connection:
    """One live WebSocket: its socket, its frame reader, its mailbox (the Router's way
    out to the socket) and how it ends. Its mailbox is the `outlet` of its core `Peer`."""

    __slots__ = ("close_reason", "closed_by_peer", "fd", "mailbox", "nursery", "peer",
                 "started", "stream")

    def __init__(self, router: Router, peer: Peer, stream: trio.abc.Stream) -> None:
        settings = router.settings
        self.peer = peer
        self.stream = stream
        self.fd = transport.socket_fd(stream)
        kind = ChannelMailbox if settings.mailbox == "channel" else DirectMailbox
        self.mailbox: Mailbox = kind(self, stream, self.fd, settings.max_pending,
                                     settings.write_timeout, router.metrics)
        self.nursery: trio.Nursery | None = None  # the actor's, while it runs
        self.close_reason = ""
        self.closed_by_peer = False
        self.started = time.time()
        peer.outlet = self.mailbox  # the Router sends into it, and closes through it

    @property
    def queued(self) -> int:
        return self.mailbox.queued

    def close(self, code: int, reason: str, by_peer: bool = False) -> None:
        """End the connection with `code` (the first request wins): the mailbox takes no
        more frames and the actor's task moves on to the closing handshake."""
        if self.peer.close_code is None:
            self.peer.close_code = code
            self.close_reason = reason.encode()[:120].decode(errors="ignore")
            self.closed_by_peer = by_peer
            self.mailbox.closed = True  # from now on nothing more is sent but the close frame
            if self.nursery is not None:
                self.nursery.cancel_scope.cancel()

    async def run(self, router: Router, reader: ws.FrameReader, early: bytes,
                  held: HeldBytesBudget[Connection]) -> None:
        """Serve until either side closes; the Router forgets the connection as soon as it
        is closing, and the closing handshake that follows holds only the socket. `held` is
        the node-wide budget of bytes in unfinished messages."""
        peer = self.peer
        event("connect", logging.DEBUG, user=peer.principal.user_id, remote=peer.remote,
              conn=peer.id)
        try:
            async with trio.open_nursery() as nursery:
                if peer.close_code is None:
                    self.nursery = nursery
                    self.mailbox.start_writer()
                    try:
                        await router.started(peer)
                        await self._read(router, reader, early, held)
                    except Exception:
                        self._internal(router, "reader")
                nursery.cancel_scope.cancel()  # stop the writer: the close path takes over
            self.nursery = None
        finally:
            violated = reader.closed
            reader.close()  # an unfinished message's memory goes now, not after the handshake
            held.forget(self)
            reader = reader if violated else ws.FrameReader(router.settings.max_message_bytes)
            unsent = self.mailbox.seal()
            if unsent > 0:
                router.metrics.drops["closed_with_queue"] += unsent
            with trio.CancelScope(shield=True), trio.move_on_after(
                    router.settings.handshake_timeout):
                await router.leave(peer)
            event("close", logging.DEBUG if peer.close_code in _ORDINARY else logging.INFO,
                  user=peer.principal.user_id, conn=peer.id, code=peer.close_code,
                  reason=self.close_reason, by="client" if self.closed_by_peer else "server",
                  duration=f"{time.time() - self.started:.3f}")
        try:
            await self._finish(router, reader)
        finally:
            self.fd = -1  # the number may go to the next socket: never write to it again

    async def _read(self, router: Router, reader: ws.FrameReader, data: bytes,
                    held: HeldBytesBudget[Connection]) -> None:
        """Frames in until the connection is closing. A message must be whole within
        message_timeout of its first byte (4408), and what unfinished messages hold counts
        against the node's budget (the largest holder is closed 1013 when over it)."""
        fd = self.fd
        waited = True  # since the last checkpoint
        clock = MessageClock(router.settings.message_timeout)
        deadline = math.inf  # while no message is in progress, waiting costs nothing extra
        while True:
            if data:
                if not await self._received(router, reader, data):
                    return
                now = self.peer.last_seen
                deadline = clock.update(reader.in_message, reader.messages, now)
                if not self._within_budget(reader.held, held) or deadline <= now:
                    return
            if fd >= 0:  # inline, so that an idle connection waits with no extra frame
                got = transport.read_now(fd)
                if got is None:
                    data = b""
                    if deadline == math.inf:
                        await trio.lowlevel.wait_readable(fd)
                    else:
                        with trio.move_on_at(deadline):
                            await trio.lowlevel.wait_readable(fd)
                        if clock.expired(trio.current_time()):
                            self.close(CloseCode.HEARTBEAT_TIMEOUT, "message not finished in time")
                            return
                    waited = True
                    continue
                data = got
                if data and not waited:
                    await trio.lowlevel.checkpoint()  # a peer that always has data yields too
                waited = False
            else:
                data = await transport.receive_some(self.stream, fd)
            if not data:
                self.close(CloseCode.ABNORMAL, "connection lost", by_peer=True)
                return
            self.peer.last_seen = trio.current_time()  # any bytes are a sign of life (§6)

    def _within_budget(self, mine: int, held: HeldBytesBudget[Connection]) -> bool:
        """Report what this connection holds; over the node's budget, close the largest
        holders (1013) until it fits. False when this connection is one of them."""
        if (mine or held.held(self)) and held.update(self, mine):
            while (largest := held.over()) is not None:
                largest.close(CloseCode.TRY_AGAIN_LATER,
                              "server at capacity (unfinished messages): come back with backoff")
                held.forget(largest)
        return self.peer.close_code is None

    async def _received(self, router: Router, reader: ws.FrameReader, data: bytes) -> bool:
        """Act on the frames in `data`: text to the Router, pings answered, binary refused,
        a close frame (or a violation of RFC 6455) ends it. False once closing. (A function
        of its own so that nothing parsed stays referenced while the reader waits.)"""
        failure = None
        try:
            events = reader.feed(data)
        except ws.FrameError as exc:
            events, failure = exc.events, exc  # what came before the violation counts
        peer = self.peer
        for ev in events:
            if type(ev) is ws.TextMessage:
                await router.handle(peer, ev.text)
            elif type(ev) is ws.Ping:
                router.send(peer, ws.pong_frame(ev.payload))  # RFC 6455: MUST answer
                router.control_frame(peer)
            elif type(ev) is ws.Pong:
                router.control_frame(peer, pong=True)
            elif type(ev) is ws.BinaryMessage:
                router.binary_frame(peer)
            elif type(ev) is ws.CloseReceived:
                router.control_frame(peer)  # counted; honoured whatever the count says
                self.close(ev.code or CloseCode.NORMAL, ev.reason, by_peer=True)
            if peer.close_code is not None:
                return False
        if failure is not None:
            self.close(failure.code, failure.reason)
            return False
        return True

    async def _finish(self, router: Router, reader: ws.FrameReader) -> None:
        """The closing handshake: the rest of a half-written frame, then our close frame (an
        echo of the peer's, or ours), then, when we began it, wait for the peer's answer."""
        code = self.peer.close_code
        if code is None or code == CloseCode.ABNORMAL or not self.mailbox.writable:
            return  # the peer is gone, or a write is stuck: nothing more can be sent
        frame = self.mailbox.unsent + ws.close_frame(code, self.close_reason)
        if self.closed_by_peer:
            with trio.move_on_after(router.settings.write_timeout), contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError):
                await transport.write_all(self.stream, self.fd, frame)
            return
        await transport.linger_close(self.stream, self.fd, frame, reader, router.settings)

    def _internal(self, router: Router, where: str) -> None:
        router.metrics.handler_errors += 1
        event("connection failed", logging.ERROR, exc_info=True, conn=self.peer.id,
              user=self.peer.principal.user_id, task=where)
        self.close(CloseCode.INTERNAL, "internal error")
