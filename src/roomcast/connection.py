"""The Connection actor: one task per WebSocket that reads frames, and the send path the
Router writes through.

A frame the Router sends goes straight to the non-blocking socket when nothing is queued
(no task switch, no copy); only what the socket does not take waits in a bounded queue,
drained by a writer task that exists only while there is something to drain. A full queue
closes the connection 4409 instead of slowing anybody else. Whatever goes wrong in here
closes this connection (4500, logged, counted) and nothing else.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING

import trio

from roomcast import protocol as p
from roomcast import websocket as ws
from roomcast.limits import AbuseMeter, TokenBucket
from roomcast.log import event

if TYPE_CHECKING:
    from roomcast.auth import Principal
    from roomcast.router import Router
    from roomcast.settings import Settings

BATCH_BYTES = 256 * 1024  # the most the writer joins into one write
RECEIVE_BYTES = 64 * 1024
LOST = 1006  # the peer went away without a close frame (never sent on the wire)
_ORDINARY = frozenset({p.NORMAL, p.GOING_AWAY, LOST})  # closes logged at debug level only


class Conn:
    """One live connection: the Router's record of it and its way out to the socket."""

    __slots__ = (
        "__weakref__",
        "abuse",
        "binary_frames",
        "bucket",
        "close_code",
        "close_reason",
        "closed_by_peer",
        "connected_at",
        "fd",
        "id",
        "last_seen",
        "nursery",
        "pending",
        "principal",
        "remote",
        "remote_ip",
        "router",
        "sample_at",
        "started",
        "stream",
        "tail",
        "writing",
    )

    def __init__(
        self, router: Router, principal: Principal, remote: str, remote_ip: str, now: float,
        stream: trio.abc.Stream | None = None,
    ) -> None:
        settings = router.settings
        self.router = router
        self.id = secrets.token_hex(6)
        self.principal = principal
        self.remote = remote
        self.remote_ip = remote_ip
        self.last_seen = now
        self.connected_at = now
        self.started = time.time()
        self.bucket = TokenBucket(settings.rate_per_second, settings.rate_burst, now)
        self.abuse = AbuseMeter(settings.rate_burst)
        self.binary_frames = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_by_peer = False
        self.sample_at: float | None = None
        self.stream = stream
        self.fd = socket_fd(stream)  # -1: not a socket, every frame goes through the writer
        self.pending: deque[bytes] | None = None  # made on first use: most never need one
        self.tail = False  # pending[0] is the rest of a half-written frame
        self.writing = False  # a writer task is draining `pending`
        # The actor's nursery while it runs: a writer starts in it, close() cancels it.
        self.nursery: trio.Nursery | None = None

    def send(self, frame: bytes) -> None:
        """Send a ready WebSocket frame without waiting: straight into the socket when
        nothing is queued, else into the bounded queue; a full queue means too slow."""
        if self.close_code is not None:
            self.router.metrics.drops["closing"] += 1
            return
        pending = self.pending
        if not pending and self.fd >= 0:
            try:
                sent = os.write(self.fd, frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close(LOST, "connection lost", by_peer=True)
                return
            if sent == len(frame):
                metrics = self.router.metrics
                metrics.frames_out += 1
                metrics.bytes_out += sent
                return
            if sent:
                frame = frame[sent:]  # the rest goes first, and before any close frame
                self.tail = True
        if pending is None:
            pending = self.pending = deque()
        if len(pending) >= self.router.settings.max_pending:
            self.router.metrics.drops["slow_consumer"] += 1
            self.close(p.TOO_SLOW, "too slow: outgoing queue overflowed")
            return
        pending.append(frame)
        if not self.writing and self.nursery is not None:
            self.writing = True
            self.nursery.start_soon(_writer, self)

    @property
    def queued(self) -> int:
        """Frames waiting to be written."""
        return len(self.pending) if self.pending else 0

    def reply(self, frame: dict[str, object]) -> None:
        self.send(p.text_frame(p.encode(frame)))

    def error(self, code: str, message: str, command_id: p.CommandId = None) -> None:
        self.router.metrics.errors[code] += 1
        self.send(p.text_frame(p.error_frame(code, message, command_id)))

    def close(self, code: int, reason: str, by_peer: bool = False) -> None:
        """Ask the connection actor to close with `code` (the first request wins)."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason.encode()[:120].decode(errors="ignore")
            self.closed_by_peer = by_peer
            if self.nursery is not None:
                self.nursery.cancel_scope.cancel()


def socket_fd(stream: trio.abc.Stream | None) -> int:
    """The socket's file descriptor under a trio SocketStream; -1 for any other stream."""
    sock = getattr(stream, "socket", None)
    return sock.fileno() if sock is not None else -1


async def receive_some(stream: trio.abc.Stream, fd: int) -> bytes:
    """The next bytes from the peer, b"" once it has gone. A socket is read directly (fewer
    layers per read), and waited for only when nothing has arrived yet: a caller that loops
    on it without waiting otherwise must checkpoint by itself."""
    if fd < 0:
        try:
            return bytes(await stream.receive_some(RECEIVE_BYTES))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""
    while (data := read_now(fd)) is None:
        await trio.lowlevel.wait_readable(fd)
    return data


def read_now(fd: int) -> bytes | None:
    """What a non-blocking socket has now: bytes, b"" once the peer has gone (or reset the
    connection), None when nothing has arrived yet."""
    try:
        return os.read(fd, RECEIVE_BYTES)
    except BlockingIOError:
        return None
    except OSError:
        return b""


async def write_all(stream: trio.abc.Stream, fd: int, data: bytes) -> None:
    """Write every byte, waiting for room as needed (handshakes, close frames)."""
    if fd < 0:
        await stream.send_all(data)
        return
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc


async def linger_close(stream: trio.abc.Stream, fd: int, frame: bytes, reader: ws.FrameReader,
                       settings: Settings) -> None:
    """End a WebSocket we close: send `frame` (the rest of a half-written frame and a close
    frame) within write_timeout (a slow reader's socket may first need to drain), then wait
    up to handshake_timeout for the peer's close frame, so that its bytes do not arrive at a
    closed socket and reset the connection before it has read ours. A reader that can parse
    no further (after a violation) half-closes instead and waits for the peer's end."""
    with trio.move_on_after(settings.write_timeout) as sending:
        try:
            await write_all(stream, fd, frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
    if sending.cancelled_caught:
        return
    with trio.move_on_after(settings.handshake_timeout):
        try:
            eof_sent = False
            while True:
                if reader.closed and not eof_sent and isinstance(
                        stream, trio.abc.HalfCloseableStream):
                    await stream.send_eof()
                    eof_sent = True
                data = await stream.receive_some(RECEIVE_BYTES)
                if not data:
                    return
                if not reader.closed:
                    with contextlib.suppress(ws.FrameError):
                        if any(type(ev) is ws.CloseReceived for ev in reader.feed(bytes(data))):
                            return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


async def run_connection(router: Router, conn: Conn, stream: trio.abc.Stream,
                         reader: ws.FrameReader, early: bytes = b"") -> None:
    """Serve one admitted connection until either side closes it. The Router forgets it as
    soon as it is closing; the closing handshake that follows holds only the socket."""
    event("connect", logging.DEBUG, user=conn.principal.user_id, remote=conn.remote,
          conn=conn.id)
    router.sockets += 1
    try:
        try:
            async with trio.open_nursery() as nursery:
                if conn.close_code is None:
                    conn.nursery = nursery
                    if conn.pending:
                        conn.writing = True
                        nursery.start_soon(_writer, conn)
                    try:
                        await _read(router, conn, stream, reader, early)
                    except Exception:
                        _internal(router, conn, "reader")
                nursery.cancel_scope.cancel()  # stop the writer: the close path takes over
            conn.nursery = None
            _count_unsent(router, conn)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(
                    router.settings.handshake_timeout):
                await router.disconnect(conn)
            event("close", logging.DEBUG if conn.close_code in _ORDINARY else logging.INFO,
                  user=conn.principal.user_id, conn=conn.id, code=conn.close_code,
                  reason=conn.close_reason, by="client" if conn.closed_by_peer else "server",
                  duration=f"{time.time() - conn.started:.3f}")
        await _finish(router, conn, stream, reader)
    finally:
        conn.fd = -1  # the number may go to the next socket: never write to it again
        router.sockets -= 1
        router.check_drained()


async def _read(router: Router, conn: Conn, stream: trio.abc.Stream, reader: ws.FrameReader,
                data: bytes) -> None:
    """Frames in: text goes to the Router, pings get pongs, binary gets an error, a close
    frame (or a violation of RFC 6455) ends it."""
    fd = conn.fd
    waited = True  # since the last checkpoint
    while True:
        if data and not await _received(router, conn, reader, data):
            return
        if fd >= 0:  # inline, so that an idle connection waits with no extra frame
            got = read_now(fd)
            if got is None:
                data = b""
                await trio.lowlevel.wait_readable(fd)
                waited = True
                continue
            data = got
            if data and not waited:
                await trio.lowlevel.checkpoint()  # a peer that always has data yields too
            waited = False
        else:
            data = await receive_some(stream, fd)
        if not data:
            conn.close(LOST, "connection lost", by_peer=True)
            return
        conn.last_seen = trio.current_time()  # any bytes are a sign of life (§6)


async def _received(router: Router, conn: Conn, reader: ws.FrameReader, data: bytes) -> bool:
    """Act on the frames in `data`; False once the connection is closing. (A function of its
    own so that nothing parsed stays referenced while the reader waits.)"""
    failure = None
    try:
        events = reader.feed(data)
    except ws.FrameError as exc:
        events, failure = exc.events, exc  # what came before the violation counts
    for ev in events:
        if type(ev) is ws.TextMessage:
            await router.handle(conn, ev.text)
        elif type(ev) is ws.Ping:
            conn.send(ws.pong_frame(ev.payload))
        elif type(ev) is ws.BinaryMessage:
            router.binary_frame(conn)
        elif type(ev) is ws.CloseReceived:
            conn.close(ev.code or p.NORMAL, ev.reason, by_peer=True)
        if conn.close_code is not None:
            return False
    if failure is not None:
        conn.close(failure.code, failure.reason)
        return False
    return True


async def _writer(conn: Conn) -> None:
    """Drain the queue into the socket as it makes room, as many queued frames as fit in one
    write; no progress for write_timeout seconds closes the connection (4409) and gives up
    on it. Frames leave the queue only once written, so a cancelled wait loses nothing."""
    router = conn.router
    metrics = router.metrics
    pending = conn.pending
    assert pending is not None
    timeout = router.settings.write_timeout
    try:
        while pending and conn.close_code is None:
            sizes = []
            size = 0
            for frame in pending:
                sizes.append(len(frame))
                size += len(frame)
                if size >= BATCH_BYTES:
                    break
            batch = pending[0] if len(sizes) == 1 else b"".join(
                itertools.islice(pending, len(sizes)))
            with trio.move_on_after(timeout) as deadline:
                if conn.fd >= 0:
                    sent = 0
                    while not sent:
                        await trio.lowlevel.wait_writable(conn.fd)
                        with contextlib.suppress(BlockingIOError):
                            sent = os.write(conn.fd, batch)
                else:
                    deadline.shield = True  # a cancelled send_all could leave half a frame
                    await conn.stream.send_all(batch)  # type: ignore[union-attr]
                    sent = len(batch)
            if deadline.cancelled_caught:
                metrics.drops["write_timeout"] += len(pending)
                pending.clear()
                conn.fd = -1
                conn.stream = None  # a write is stuck or cut short: never write again
                conn.close(p.TOO_SLOW, "too slow: write timed out")
                return
            for _ in sizes:
                pending.popleft()
            written = 0
            for n in itertools.accumulate(sizes):
                if n > sent:
                    break
                written += 1
            conn.tail = sent < size
            if conn.tail:
                pending.appendleft(batch[sent:])
            metrics.frames_out += written
            metrics.bytes_out += sent
            if conn.sample_at is not None and not pending:
                metrics.observe_latency(trio.current_time() - conn.sample_at)
                conn.sample_at = None
    except (trio.BrokenResourceError, OSError):
        conn.close(LOST, "connection lost", by_peer=True)
    except Exception:
        _internal(router, conn, "writer")
    finally:
        conn.writing = False


async def _finish(router: Router, conn: Conn, stream: trio.abc.Stream, reader: ws.FrameReader
                  ) -> None:
    """The closing handshake: the rest of a half-written frame, then our close frame (an
    echo of the peer's, or ours), then, when we began it, wait for the peer's answer."""
    if conn.close_code == LOST or (conn.fd < 0 and conn.stream is None):
        return  # the peer is gone, or a write is stuck: nothing more can be sent
    tail = conn.pending[0] if conn.tail and conn.pending else b""
    frame = tail + ws.close_frame(conn.close_code, conn.close_reason)
    if conn.closed_by_peer:
        with trio.move_on_after(router.settings.write_timeout), contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError):
            await write_all(stream, conn.fd, frame)
        return
    await linger_close(stream, conn.fd, frame, reader, router.settings)


def _count_unsent(router: Router, conn: Conn) -> None:
    """Frames still queued when a connection closes are dropped: count them."""
    unsent = conn.queued - (1 if conn.tail else 0)
    if unsent > 0:
        router.metrics.drops["closed_with_queue"] += unsent


def _internal(router: Router, conn: Conn, where: str) -> None:
    router.metrics.handler_errors += 1
    event("connection failed", logging.ERROR, exc_info=True, conn=conn.id,
          user=conn.principal.user_id, task=where)
    conn.close(p.INTERNAL_CLOSE, "internal error")
