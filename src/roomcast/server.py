"""Listeners, the front door, supervision and graceful shutdown.

Every TCP connection first has its request head read by h11 under a time-out: plain HTTP
gets a prompt answer, a WebSocket upgrade is checked (path, Origin, RFC 6455 headers),
answered with 101, and the connection actor takes over the same task.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from urllib.parse import parse_qs, urlsplit

import h11
import trio

from roomcast import protocol as p
from roomcast import websocket as ws
from roomcast.auth import AuthError
from roomcast.connection import Conn, linger_close, run_connection, socket_fd, write_all
from roomcast.log import event
from roomcast.router import Refused, Router

_MAX_HEAD = 16 * 1024


class _Head:
    """What the front door learned from a request head, and the bytes that followed it."""

    def __init__(self, request: h11.Request, rest: bytes) -> None:
        self.method = request.method.decode("latin-1")
        self.target = request.target.decode("latin-1")
        self.http_version = request.http_version.decode("latin-1")
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                        for k, v in request.headers}
        self.rest = rest

    @property
    def is_upgrade(self) -> bool:
        """Asks for WebSocket; whether it asks correctly is check_upgrade's to say."""
        return "websocket" in self.headers.get("upgrade", "").lower()

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def token(self) -> str | None:
        values = parse_qs(urlsplit(self.target).query).get("token")
        if values:
            return values[0]
        auth = self.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None


async def _read_head(stream: trio.abc.Stream) -> _Head | None:
    """Read until h11 has a whole request head; None when the peer sent no valid one."""
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
    while True:
        try:
            ev = parser.next_event()
        except h11.RemoteProtocolError:
            return None
        if isinstance(ev, h11.Request):
            parser.next_event()  # PAUSED for an upgrade: what follows is not HTTP
            return _Head(ev, parser.trailing_data[0])
        if ev is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            if not data:
                return None
            parser.receive_data(bytes(data))
        else:
            return None


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


def _peer(stream: trio.abc.Stream) -> tuple[str, str]:
    sock = getattr(stream, "socket", None)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        host, port = "?", 0
    return f"{host}:{port}", str(host)


async def handle_tcp(router: Router, stream: trio.abc.Stream) -> None:
    """The front door for one TCP connection; nothing raised here reaches the listener."""
    remote, remote_ip = _peer(stream)
    try:
        admitted = await _front_door(router, stream, remote, remote_ip)
        if admitted is not None:  # the handshake's state is gone; the session holds little
            await run_connection(router, *admitted)
    except Exception:
        router.metrics.handler_errors += 1
        event("connection failed", logging.ERROR, exc_info=True, remote=remote)
    finally:
        await trio.aclose_forcefully(stream)


_Admitted = tuple[Conn, trio.abc.Stream, ws.FrameReader, bytes]


async def _front_door(router: Router, stream: trio.abc.Stream, remote: str, remote_ip: str
                      ) -> _Admitted | None:
    """Plain HTTP answered, an upgrade checked and accepted: the admitted connection, with
    the bytes that came after its request head; None when there is nothing to serve."""
    settings = router.settings
    head = None
    with trio.move_on_after(settings.handshake_timeout):
        head = await _read_head(stream)
    if head is None:
        router.metrics.refused["bad_handshake"] += 1
        await _plain_answer(stream, 400, b'{"error": "bad_request"}')
        return None
    if not head.is_upgrade:
        if head.method == "GET" and head.path == "/healthz":
            await _plain_answer(stream, 200, b'{"status": "ok"}')
        else:
            await _plain_answer(stream, 426, b'{"error": "upgrade_required", '
                                b'"message": "this port speaks WebSocket only"}',
                                "Upgrade: websocket\r\n")
        return None
    if head.path != settings.path:
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
    fd = socket_fd(stream)
    with trio.move_on_after(settings.handshake_timeout) as handshake:
        await write_all(stream, fd, ws.upgrade_response(key))
    if handshake.cancelled_caught:
        return None
    return await _admit(router, stream, fd, head, remote, remote_ip)


async def _refuse(router: Router, stream: trio.abc.Stream, fd: int, code: int, reason: str
                  ) -> None:
    """Close a just-upgraded connection before it is admitted: no data frame, a close code."""
    router.metrics.closes[code] += 1
    await linger_close(stream, fd, ws.close_frame(code, reason),
                       ws.FrameReader(router.settings.max_message_bytes),
                       router.settings.handshake_timeout)


async def _admit(router: Router, stream: trio.abc.Stream, fd: int, head: _Head, remote: str,
                 remote_ip: str) -> _Admitted | None:
    """Authenticate and admit within the limits, or close with the code that says why."""
    try:
        principal = router.authenticate(head.token())
    except AuthError as exc:
        event("refused", remote=remote, reason=exc.reason, detail=str(exc))
        await _refuse(router, stream, fd, p.UNAUTHORIZED, str(exc)[:120])
        return None
    try:
        conn = router.connect(principal, remote, remote_ip, stream)
    except Refused as exc:
        router.metrics.refused[exc.why] += 1
        event("refused", remote=remote, user=principal.user_id, reason=exc.why)
        await _refuse(router, stream, fd, exc.code, exc.reason)
        return None
    return conn, stream, ws.FrameReader(router.settings.max_message_bytes), head.rest


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
                await trio.serve_listeners(functools.partial(handle_tcp, router), listeners,
                                           handler_nursery=handlers)

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

