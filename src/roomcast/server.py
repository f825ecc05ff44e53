"""Listeners, the front door, supervision and graceful shutdown.

Every TCP connection first has its request head read under a time-out: plain HTTP
gets a prompt answer, a WebSocket upgrade is checked (path, Origin, RFC 6455 headers),
answered with 101, and the connection actor takes over the same task.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from urllib.parse import parse_qs, urlsplit

import trio

from roomcast import protocol as p
from roomcast import websocket as ws
from roomcast.auth import AuthError
from roomcast.connection import Conn, linger_close, receive_some, run_connection, socket_fd
from roomcast.log import event
from roomcast.router import Refused, Router


def _is_upgrade(head: ws.RequestHead) -> bool:
    """Asks for WebSocket; whether it asks correctly is check_upgrade's to say."""
    return "websocket" in head.headers.get("upgrade", "").lower()


def _path(head: ws.RequestHead) -> str:
    return urlsplit(head.target).path


def _token(head: ws.RequestHead) -> str | None:
    """The JWT from `?token=` (the only way a browser can) or `Authorization: Bearer`."""
    values = parse_qs(urlsplit(head.target).query).get("token")
    if values:
        return values[0]
    scheme, _, value = head.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def _read_head(stream: trio.abc.Stream) -> ws.RequestHead | None:
    """Read until a whole request head has arrived; None when the peer hung up first.
    HandshakeError when what it sent is not a valid head."""
    data = bytearray()
    fd = socket_fd(stream)
    while True:
        chunk = await receive_some(stream, fd)
        if not chunk:
            return None
        searched = len(data)
        data += chunk
        head = ws.parse_request_head(bytes(data) if searched else chunk, searched)
        if head is not None:
            return head


async def _plain_answer(stream: trio.abc.Stream, status: int, body: bytes,
                        extra: str = "") -> None:
    """A complete HTTP/1.1 response, then the connection is closed."""
    reasons = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
               426: "Upgrade Required", 503: "Service Unavailable"}
    head = (f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{extra}")
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(head.encode() + b"\r\n" + body)


def _peer(stream: trio.abc.Stream) -> tuple[str, int]:
    sock = getattr(stream, "socket", None)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        host, port = "?", 0
    return str(host), int(port)


async def handle_tcp(router: Router, stream: trio.abc.Stream,
                     peer: tuple[str, int] | None = None) -> None:
    """The front door for one TCP connection (`peer`: its address, when the caller knows
    it); nothing raised here reaches the listener."""
    remote_ip, port = peer[:2] if peer is not None else _peer(stream)
    remote = f"{remote_ip}:{port}"
    try:
        admitted = await _front_door(router, stream, remote, remote_ip)
        if admitted is not None:  # the handshake's state is gone; the session holds little
            conn, reader, rest = admitted
            await run_connection(router, conn, stream, reader, rest)
    except Exception:
        router.metrics.handler_errors += 1
        event("connection failed", logging.ERROR, exc_info=True, remote=remote)
    finally:
        await trio.aclose_forcefully(stream)


_Admitted = tuple[Conn, ws.FrameReader, bytes]


async def _front_door(router: Router, stream: trio.abc.Stream, remote: str, remote_ip: str
                      ) -> _Admitted | None:
    """Plain HTTP answered, an upgrade checked and accepted: the admitted connection, with
    the bytes that came after its request head; None when there is nothing to serve."""
    settings = router.settings
    head = None
    message = f"no complete request head within {settings.handshake_timeout:g} s"
    with trio.move_on_after(settings.handshake_timeout):
        try:
            head = await _read_head(stream)
        except ws.HandshakeError as exc:
            message = exc.message
    if head is None:
        router.metrics.refused["bad_handshake"] += 1
        await _plain_answer(stream, 400, p.encode({"error": "bad_request", "message": message}))
        return None
    if not _is_upgrade(head):
        if head.method == "GET" and _path(head) == "/healthz":
            await _plain_answer(stream, 200, b'{"status": "ok"}')
        else:
            await _plain_answer(stream, 426, b'{"error": "upgrade_required", '
                                b'"message": "this port speaks WebSocket only"}',
                                "Upgrade: websocket\r\n")
        return None
    if _path(head) != settings.path:
        router.metrics.refused["bad_path"] += 1
        await _plain_answer(stream, 404, b'{"error": "not_found"}')
        return None
    origin = head.headers.get("origin")
    if settings.allowed_origins and origin is not None and origin not in settings.allowed_origins:
        router.metrics.refused["origin"] += 1
        event("refused", remote=remote, reason="origin not allowed", origin=origin)
        await _plain_answer(stream, 403, b'{"error": "forbidden", '
                            b'"message": "origin not allowed"}')
        return None
    try:
        key = ws.check_upgrade(head.method, head.http_version, head.headers)
    except ws.HandshakeError as exc:
        router.metrics.refused["bad_handshake"] += 1
        body = p.encode({"error": "bad_request", "message": exc.message})
        await _plain_answer(stream, exc.status, body,
                            "Sec-WebSocket-Version: 13\r\n" if exc.status == 426 else "")
        return None
    return await _admit(router, stream, head, ws.upgrade_response(key), remote, remote_ip)


async def _refuse(router: Router, stream: trio.abc.Stream, answer: bytes, code: int, reason: str
                  ) -> None:
    """Accept the handshake (`answer`), then close before any data frame, with a code."""
    router.metrics.closes[code] += 1
    await linger_close(stream, socket_fd(stream), answer + ws.close_frame(code, reason),
                       ws.FrameReader(router.settings.max_message_bytes), router.settings)


async def _admit(router: Router, stream: trio.abc.Stream, head: ws.RequestHead, answer: bytes,
                 remote: str, remote_ip: str) -> _Admitted | None:
    """Authenticate and admit within the limits, or close with the code that says why; the
    handshake's `answer` goes out in the same write as the first frame either way."""
    try:
        principal = router.authenticate(_token(head))
    except AuthError as exc:
        event("refused", remote=remote, reason=exc.reason, detail=str(exc))
        await _refuse(router, stream, answer, p.UNAUTHORIZED, str(exc)[:120])
        return None
    try:
        conn = router.connect(principal, remote, remote_ip, stream, answer)
    except Refused as exc:
        router.metrics.refused[exc.why] += 1
        event("refused", remote=remote, user=principal.user_id, reason=exc.why)
        await _refuse(router, stream, answer, exc.code, exc.reason)
        return None
    return conn, ws.FrameReader(router.settings.max_message_bytes), head.rest


_ACCEPT_BATCH = 64  # accepts in a row before letting other tasks run
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


async def _accept(router: Router, listener: trio.SocketListener, handlers: trio.Nursery
                  ) -> None:
    """Accept every pending connection per wake-up, each into a task of its own; the peer's
    address comes with it (no getpeername per connection). Out of file descriptors or
    memory: say so (once per spell), wait a little and go on, as trio.serve_listeners does."""
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
                if exc.errno not in _OUT_OF_RESOURCES:
                    continue  # the peer gave up before we accepted (ECONNABORTED, ...)
                router.metrics.refused["accept_failed"] += 1
                if not failing:
                    event("accept failed", logging.ERROR, reason=exc.strerror or str(exc),
                          hint="raise the open-files limit (ulimit -n) or lower max_connections;"
                          " retrying every 0.1 s")
                failing = True
                await trio.sleep(0.1)
                continue
            failing = False
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
            handlers.start_soon(handle_tcp, router, stream, peer)
            accepted += 1
            if accepted >= _ACCEPT_BATCH:
                accepted = 0
                await trio.lowlevel.checkpoint()
    finally:
        sock.close()


async def serve(router: Router, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                ) -> None:
    """Listen until router.shutdown(), then drain: close everyone with 1001, spread out."""
    settings = router.settings
    async with trio.open_nursery() as handlers:
        listeners = await trio.open_tcp_listeners(settings.port, host=settings.host)
        router.ws_port = listeners[0].socket.getsockname()[1]
        accepting = trio.CancelScope()

        async def accept() -> None:
            with accepting:
                async with trio.open_nursery() as loops:
                    for listener in listeners:
                        loops.start_soon(_accept, router, listener, handlers)

        handlers.start_soon(accept)
        if settings.http_port:
            from roomcast.http import serve_http

            await handlers.start(serve_http, router)
        event("listening", url=f"ws://{settings.host}:{router.ws_port}{settings.path}",
              http=f"http://{settings.host}:{router.http_port}/" if router.http_port else "off",
              node=settings.node, backplane=router.backplane.name)
        task_status.started()
        await router.wait_shutdown()
        accepting.cancel()
        for listener in listeners:
            await listener.aclose()
        await drain(router)
        handlers.cancel_scope.cancel()


async def drain(router: Router) -> None:
    """Close every connection with 1001, spread evenly over shutdown_grace seconds."""
    router.draining = True
    conns = list(router.conns.values())
    grace = router.settings.shutdown_grace
    event("draining", connections=len(conns), grace=grace)
    start = trio.current_time()
    for i, conn in enumerate(conns):
        if conns and grace:
            await trio.sleep_until(start + grace * i / len(conns))
        conn.close(p.GOING_AWAY, "server shutting down")
    with trio.move_on_after(router.settings.handshake_timeout + 1):
        await router.wait_drained()
    event("drained", left=len(router.conns), seconds=f"{trio.current_time() - start:.2f}")

