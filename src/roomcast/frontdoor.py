"""The front door: what every TCP connection on the WebSocket port meets first.

The request head is read under a time-out: plain HTTP gets a prompt answer and a closed
connection (§1) — or, with `http_on_ws_port`, is served by the HTTP endpoint as if it had
come to the HTTP port (keep-alive included) — a WebSocket upgrade is checked (path,
Origin, RFC 6455 headers) and its token verified and admitted by the Router — or refused
with the close code that says why — and the `101` answer goes out in the same write as
the first frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio

from roomcast import http as http_endpoint
from roomcast import protocol as p
from roomcast import transport
from roomcast import websocket as ws
from roomcast.auth import AuthError
from roomcast.codes import CloseCode
from roomcast.connection import Connection
from roomcast.core import Refused
from roomcast.hookwire import Allowed, BadResult, Denied, Failed, close_code, principal_from
from roomcast.log import LogThrottle, event, throttled_event
from roomcast.permissions import Principal
from roomcast.proxies import client_address, trusted_networks
from roomcast.router import Router
from roomcast.settings import Settings

Admitted = tuple[Connection, ws.FrameReader, bytes]


@dataclass(slots=True)
class Refusal:
    """A handshake to accept (`answer`) and close at once with `code`: why it was refused."""

    answer: bytes
    code: int
    reason: str


class Door:
    """What every front door of one server shares: the handshake gate (at most
    max_handshakes decided at once; reading a request head does not count, so silent
    connections cannot hold it), the throttle of refusal log lines, the draining flag."""

    def __init__(self, settings: Settings) -> None:
        self.gate = trio.Semaphore(settings.max_handshakes)
        self.refusals: LogThrottle[str] = LogThrottle(settings.log_throttle_interval)
        self.draining = False

    def refused(self, reason: str, **fields: Any) -> None:
        """Log a refused handshake: one line per reason per interval, with a count."""
        throttled_event(self.refusals, reason, trio.current_time(), "refused", reason=reason,
                        **fields)
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            426: "Upgrade Required", 503: "Service Unavailable"}


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
    fd = transport.socket_fd(stream)
    while True:
        chunk = await transport.receive_some(stream, fd)
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
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{extra}")
    await transport.send_and_close(stream, head.encode() + b"\r\n" + body)


async def front_door(router: Router, stream: trio.abc.Stream, remote: str, remote_ip: str,
                     door: Door) -> Admitted | None:
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
    if settings.trusted_proxies:  # §14: from a trusted proxy, the client it names
        client = client_address(remote_ip, head.headers,
                                trusted_networks(settings.trusted_proxies))
        if client != remote_ip:
            remote, remote_ip = f"{client} via {remote}", client
    if not _is_upgrade(head):
        if settings.http_on_ws_port:  # one port for both: the HTTP endpoint takes it over
            await http_endpoint.serve_request(router, stream, head)
        elif head.method == "GET" and _path(head) == "/healthz":
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
        door.refused("origin not allowed", remote=remote, origin=origin)
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
    answer = ws.upgrade_response(key)
    hooked: Principal | Refusal | None = None
    if _token(head) is None and router.hooks.enabled("connect"):  # §11: no token, ask the app
        hooked = await _connect_hook(router, head, remote, remote_ip, answer, door)
    elif router.key_fetcher is not None:  # §14: a refetch for a key the set lacks
        await router.await_key(_token(head))
    if isinstance(hooked, Refusal):
        decided: Admitted | Refusal = hooked
    else:
        async with door.gate:  # the costly part: at most max_handshakes at once
            decided = _admit(router, stream, head, answer, remote, remote_ip, door, hooked)
    if not isinstance(decided, Refusal):
        return decided
    await _refuse(router, stream, decided.answer, decided.code, decided.reason)
    return None


async def _refuse(router: Router, stream: trio.abc.Stream, answer: bytes, code: int, reason: str
                  ) -> None:
    """Accept the handshake (`answer`), then close before any data frame, with a code."""
    router.metrics.closes[code] += 1
    await transport.linger_close(stream, transport.socket_fd(stream),
                                 answer + ws.close_frame(code, reason),
                                 ws.FrameReader(router.settings.max_message_bytes),
                                 router.settings)


async def _connect_hook(router: Router, head: ws.RequestHead, remote: str, remote_ip: str,
                        answer: bytes, door: Door) -> Principal | Refusal:
    """A handshake without a token, decided by the application's connect hook (§11): who
    it is, or the close code its refusal asked for (1013 when the backend failed)."""
    settings = router.settings
    url = urlsplit(head.target)
    query = {name: values[0] for name, values in parse_qs(url.query).items() if name != "token"}
    headers = {name: head.headers[name] for name in settings.hook_headers
               if name in head.headers}
    outcome = await router.hooks.call("connect", {
        "node": settings.node, "remote_addr": remote_ip, "path": url.path, "query": query,
        "headers": headers})
    if isinstance(outcome, Allowed):
        try:
            return principal_from(outcome.result, router.core.authenticator.default_rooms_for)
        except BadResult as exc:
            outcome = Failed(f"a result that admits nobody: {exc}")
            event("hook failed", logging.WARNING, hook="connect", reason=outcome.reason)
    if isinstance(outcome, Denied):
        door.refused("connect_hook", remote=remote, detail=outcome.message[:120])
        return Refusal(answer, close_code(outcome.code),
                       outcome.message[:120] or "refused by the application")
    router.metrics.refused["auth_backend_unavailable"] += 1
    door.refused("auth_backend_unavailable", remote=remote)
    return Refusal(answer, CloseCode.TRY_AGAIN_LATER, "auth backend unavailable")


def _admit(router: Router, stream: trio.abc.Stream, head: ws.RequestHead, answer: bytes,
           remote: str, remote_ip: str, door: Door, principal: Principal | None = None
           ) -> Admitted | Refusal:
    """Authenticate (unless the connect hook named `principal`) and admit within the limits
    (the `connected` frame goes out in the same write as the handshake's `answer`), or say
    how to refuse: with which close code."""
    hooked = principal is not None
    try:
        if principal is None:
            principal = router.authenticate(_token(head))
    except AuthError as exc:
        door.refused(exc.reason, remote=remote, detail=str(exc))
        code = (CloseCode.TRY_AGAIN_LATER if exc.reason == "keys_unavailable"  # §14
                else CloseCode.UNAUTHORIZED)
        return Refusal(answer, code, str(exc)[:120])
    try:
        if door.draining:
            raise Refused(CloseCode.GOING_AWAY, "server shutting down", "draining")
        peer, connected = router.admit(principal, remote, remote_ip, hooked)
    except Refused as exc:
        router.metrics.refused[exc.why] += 1
        door.refused(exc.why, remote=remote, user=principal.user_id)
        return Refusal(answer, exc.code, exc.reason)
    connection = Connection(router, peer, stream)
    router.send(peer, answer + connected)
    return connection, ws.FrameReader(router.settings.max_message_bytes), head.rest


def log_failure(router: Router, remote: str) -> None:
    router.metrics.handler_errors += 1
    event("connection failed", logging.ERROR, exc_info=True, remote=remote)
