"""Every file descriptor of the server side: accepting, reading, writing, closing.

Nothing else in roomcast calls `accept`, `os.read` or `os.write` on a client's socket.
A socket is read and written directly (non-blocking, without trio's stream layers, which
cost more than the work at these sizes); any other `trio.abc.Stream` (tests, embedding)
goes through its own methods. The accept loop handles what `trio.serve_listeners`
handles — running out of descriptors or memory (wait and retry), a peer that gave up
before it was accepted (skip) — and raises anything else.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import trio

from roomcast import websocket as ws
from roomcast.log import event
from roomcast.metrics import Metrics
from roomcast.settings import Settings

RECEIVE_BYTES = 64 * 1024
ACCEPT_BATCH = 64  # accepts in a row before letting other tasks run
# errnos as trio.serve_listeners sorts them
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
PEER_GAVE_UP = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EAGAIN})
ACCEPT_RETRY = 0.1  # seconds between accepts while out of resources

Handler = Callable[[trio.SocketStream, tuple[str, int]], Awaitable[None]]


def socket_fd(stream: trio.abc.Stream | None) -> int:
    """The socket's file descriptor under a trio SocketStream; -1 for any other stream."""
    sock = getattr(stream, "socket", None)
    return sock.fileno() if sock is not None else -1


def read_now(fd: int) -> bytes | None:
    """What a non-blocking socket has now: bytes, b"" once the peer has gone (or reset the
    connection), None when nothing has arrived yet."""
    try:
        return os.read(fd, RECEIVE_BYTES)
    except BlockingIOError:
        return None
    except OSError:
        return b""


async def receive_some(stream: trio.abc.Stream, fd: int) -> bytes:
    """The next bytes from the peer, b"" once it has gone; waits only when nothing has
    arrived yet (a caller looping on it without waiting must checkpoint by itself)."""
    if fd < 0:
        try:
            return bytes(await stream.receive_some(RECEIVE_BYTES))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""
    while (data := read_now(fd)) is None:
        await trio.lowlevel.wait_readable(fd)
    return data


def write_now(fd: int, data: bytes | memoryview) -> int:
    """Write what the socket takes now, without waiting: the number of bytes written (0 when
    it is full). OSError when the peer has gone."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0


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


async def write_some(stream: trio.abc.Stream | None, fd: int, data: bytes) -> int:
    """Wait until the socket takes some of `data`; how much it took. A stream that is not a
    socket takes all of it (its send_all is shielded: a cancelled one could leave half a
    frame)."""
    if fd < 0:
        assert stream is not None
        with trio.CancelScope(shield=True):
            await stream.send_all(data)
        return len(data)
    while True:
        await trio.lowlevel.wait_writable(fd)
        sent = write_now(fd, data)
        if sent:
            return sent


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


async def send_and_close(stream: trio.abc.Stream, data: bytes) -> None:
    """Send a complete answer (a plain HTTP response); a peer that has gone is no error."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)


async def accept_loop(listener: trio.SocketListener, handler: Handler, nursery: trio.Nursery,
                      metrics: Metrics) -> None:
    """Accept every pending connection per wake-up, each into a task of its own in
    `nursery`; the peer's address comes with it (no getpeername per connection)."""
    sock = socket.socket(fileno=os.dup(listener.socket.fileno()))  # our own, non-blocking
    sock.setblocking(False)
    failing = False
    try:
        accepted = 0
        while True:
            try:
                conn, peer = sock.accept()
            except BlockingIOError:
                accepted = 0
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as exc:
                if exc.errno in PEER_GAVE_UP:
                    await trio.lowlevel.checkpoint()
                    continue
                if exc.errno not in OUT_OF_RESOURCES:
                    raise
                metrics.refused["accept_failed"] += 1
                if not failing:
                    event("accept failed", logging.ERROR, reason=exc.strerror or str(exc),
                          hint="raise the open-files limit (ulimit -n) or lower max_connections;"
                          f" retrying every {ACCEPT_RETRY:g} s")
                failing = True
                await trio.sleep(ACCEPT_RETRY)
                continue
            failing = False
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
            nursery.start_soon(handler, stream, peer)
            accepted += 1
            if accepted >= ACCEPT_BATCH:
                accepted = 0
                await trio.lowlevel.checkpoint()
    finally:
        sock.close()


async def open_listeners(host: str, port: int, *, reuse_port: bool = False
                         ) -> list[trio.SocketListener]:
    """Listeners on host:port, as trio.open_tcp_listeners; with `reuse_port`, SO_REUSEPORT is
    set so that several worker processes listen on one port and the kernel spreads new
    connections among them (`workers`)."""
    if not reuse_port:
        return await trio.open_tcp_listeners(port, host=host)
    addresses = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                              flags=socket.AI_PASSIVE)
    listeners = []
    try:
        for family, kind, proto, _, address in addresses:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(0xFFFF)  # clipped to net.core.somaxconn, as trio does
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners
