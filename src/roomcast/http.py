"""The HTTP endpoint's front door (§8, §15): its own listener, keep-alive and pipelining.

Connections are accepted by the same loop as the WebSocket port's
(`transport.accept_loop`), and request heads are read by the same parser
(`roomcast.websocket.parse_request_head`, behind a faster path for the usual head in
`roomcast.httpwire`). Each connection
is one task that reads, answers every whole request it has in order (pipelined answers
go out in one write), and waits for more — all under time-outs (`roomcast.httptimer`):
a head must arrive within `handshake_timeout`, a body within `http_body_timeout`, the
next request within `http_keepalive_timeout`, and an answer must be taken within
`write_timeout`. Nothing a client sends makes it hold more than one head
(`http_max_head_bytes`), one body (`max_message_bytes`, or `http_max_batch_bytes` for
/api/batch with the API key) and one read; past `http_max_connections` open
connections a new one is answered 503 and closed. The routes are `roomcast.httpapi`.
"""

from __future__ import annotations

import logging
from typing import Final

import trio

from roomcast import transport
from roomcast import websocket as ws
from roomcast.codes import ErrorCode
from roomcast.httpapi import HttpApi, api_for
from roomcast.httptimer import Deadlines, Watch
from roomcast.httpwire import CONTINUE, HttpError, RequestParser
from roomcast.log import event
from roomcast.router import Router

FLUSH_BYTES: Final = 64 * 1024  # pipelined answers are written once they reach this much
_FRESH_READS: Final = 16  # reads without waiting before letting other tasks run
_IDLE, _HEAD, _BODY = 0, 1, 2  # where a connection is: between requests, in a head, a body
_TIMED_OUT: Final = HttpError(408, "timeout", "the request did not arrive in time; send the "
                              "whole request at once", close=True)
_BUSY: Final = HttpError(503, ErrorCode.UNAVAILABLE, "this node has http_max_connections "
                         "HTTP connections open; retry in a second, reuse a keep-alive "
                         "connection, or raise http_max_connections", close=True,
                         headers=(("Retry-After", "1"),))


async def serve_connection(api: HttpApi, stream: trio.abc.Stream, deadlines: Deadlines,
                           parser: RequestParser | None = None) -> None:
    """Answer one connection's requests until it closes, breaks a rule or times out
    (`parser`: one that already holds the start of the connection, for one-port use)."""
    settings = api.router.settings
    fd = transport.socket_fd(stream)
    if parser is None:
        parser = api.parser()
    timeouts = {_IDLE: settings.http_keepalive_timeout, _HEAD: settings.handshake_timeout,
                _BODY: settings.http_body_timeout}
    phase = _IDLE
    with trio.CancelScope() as scope:
        watch = Watch(scope)
        deadlines.set(watch, trio.current_time() + settings.handshake_timeout)  # the first
        try:
            phase = await _serve(api, stream, fd, parser, deadlines, watch, timeouts)
        finally:
            deadlines.drop(watch)
    if scope.cancelled_caught:  # the deadline passed while it waited for bytes
        phase = _phase(parser)
    if phase != _IDLE:  # timed out in the middle of a request
        await _write(stream, fd, api.refused(_TIMED_OUT, parser.pending_path),
                     settings.write_timeout)


async def _serve(api: HttpApi, stream: trio.abc.Stream, fd: int, parser: RequestParser,
                 deadlines: Deadlines, watch: Watch, timeouts: dict[int, float]) -> int:
    """The connection's loop: answer, wait for bytes, feed them; returns the phase it
    timed out in (_IDLE once it is over for any other reason). Cancelled through
    `watch`'s scope when its deadline passes while it waits."""
    phase = _IDLE
    fresh = 0  # reads in a row that found bytes without waiting
    more = True  # the last read may have left bytes in the socket
    while True:
        keep_alive, answered = await _answer_all(api, stream, fd, parser)
        if not keep_alive:
            return _IDLE
        if (current := _phase(parser)) != phase or answered:
            phase = current
            deadlines.set(watch, trio.current_time() + timeouts[phase])
        # Only a read that filled its buffer may have left bytes behind; otherwise the
        # socket is all but surely empty, and trying costs a system call per request.
        data = transport.read_now(fd) if fd >= 0 and more else None
        if data is not None and fresh < _FRESH_READS:
            fresh += 1
        elif data is not None:
            fresh = 0
            await trio.lowlevel.checkpoint()  # a client that never stops sending
        else:
            fresh = 0
            if watch.expired():
                return phase
            watch.waiting = True
            try:
                data = await _receive(stream, fd)
            finally:
                watch.waiting = False
        if not data:
            if phase == _BODY:  # the client left mid-body: tallied as a 400 of its route
                api.count(parser.pending_path, 400)
            return _IDLE
        more = len(data) >= transport.RECEIVE_BYTES
        parser.feed(data)


async def _receive(stream: trio.abc.Stream, fd: int) -> bytes:
    """Wait for the next bytes (the caller found none just now); b"" once the peer has
    gone."""
    if fd < 0:
        return await transport.receive_some(stream, fd)
    while True:
        await trio.lowlevel.wait_readable(fd)
        data = transport.read_now(fd)
        if data is not None:
            return data


async def _answer_all(api: HttpApi, stream: trio.abc.Stream, fd: int, parser: RequestParser
                      ) -> tuple[bool, bool]:
    """Answer every whole request the parser holds, in order, in as few writes as the
    answers' size allows; whether the connection stays open, and whether any request was
    answered."""
    out: list[bytes] = []
    pending = 0
    keep_alive, answered = True, False
    write_timeout = api.router.settings.write_timeout
    try:
        while keep_alive and (request := parser.next_request()) is not None:
            answer, keep_alive = await api.answer(request)
            answered = True
            out.append(answer)
            pending += len(answer)
            if pending >= FLUSH_BYTES:
                await _write(stream, fd, b"".join(out), write_timeout)
                out, pending = [], 0
    except HttpError as exc:
        out.append(api.refused(exc, parser.pending_path))
        keep_alive = False
    if parser.continue_due and keep_alive:
        parser.continue_due = False
        out.append(CONTINUE)
    if out:
        await _write(stream, fd, out[0] if len(out) == 1 else b"".join(out), write_timeout)
    return keep_alive, answered


def _phase(parser: RequestParser) -> int:
    return _BODY if parser.in_body else _IDLE if parser.idle else _HEAD


async def _write(stream: trio.abc.Stream, fd: int, data: bytes, timeout: float) -> None:
    """Write every byte within `timeout`; BrokenResourceError when the peer has gone or
    does not read."""
    if fd >= 0:
        try:
            sent = transport.write_now(fd, data)
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc
        if sent == len(data):
            return
        data = data[sent:]
    with trio.move_on_after(timeout):
        await transport.write_all(stream, fd, data)
        return
    raise trio.BrokenResourceError(f"the client took no answer within {timeout:g} s")


async def handle_connection(api: HttpApi, stream: trio.abc.Stream, deadlines: Deadlines,
                            parser: RequestParser | None = None) -> None:
    """One HTTP connection from first byte to close; nothing raised here escapes."""
    try:
        await serve_connection(api, stream, deadlines, parser)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    except Exception:
        api.router.metrics.handler_errors += 1
        event("http connection failed", logging.ERROR, exc_info=True)
    finally:
        await trio.aclose_forcefully(stream)


async def serve_request(router: Router, stream: trio.abc.Stream, head: ws.RequestHead) -> None:
    """Serve a plain HTTP request that arrived on another port's front door (its head
    already read), and the keep-alive requests after it, as the HTTP port would."""
    api = api_for(router)
    parser = api.parser()
    try:
        parser.start_with(head)
    except HttpError as exc:
        await transport.send_and_close(stream, api.refused(exc))
        return
    deadlines = Deadlines()  # this connection's own: it is not on the HTTP listener
    async with trio.open_nursery() as nursery:
        nursery.start_soon(deadlines.run)
        await handle_connection(api, stream, deadlines, parser)
        nursery.cancel_scope.cancel()


async def _turn_away(api: HttpApi, stream: trio.abc.Stream) -> None:
    """A connection past http_max_connections: 503 at once (without reading its request,
    so it costs no parsing), then closed."""
    try:
        with trio.move_on_after(api.router.settings.write_timeout):
            await transport.send_and_close(stream, api.refused(_BUSY))
    finally:
        await trio.aclose_forcefully(stream)


async def serve_http(
    router: Router, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on settings.host:settings.http_port and serve until cancelled; started with
    the port. The socket is bound here, so a busy port fails with a clear OSError."""
    settings = router.settings
    try:
        listeners = await transport.open_listeners(settings.host, settings.http_port,
                                                   reuse_port=settings.workers > 1)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen for HTTP on {settings.host}:"
                      f"{settings.http_port} ({exc.strerror}); choose another --http-port, "
                      "or 0 to turn HTTP off") from exc
    api = api_for(router)
    deadlines = Deadlines()
    open_now = 0  # connections being served, against http_max_connections

    async def handler(stream: trio.SocketStream, peer: tuple[str, int]) -> None:
        nonlocal open_now
        if open_now >= settings.http_max_connections:
            await _turn_away(api, stream)
            return
        open_now += 1
        try:
            await handle_connection(api, stream, deadlines)
        finally:
            open_now -= 1

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(deadlines.run)
            for listener in listeners:
                nursery.start_soon(transport.accept_loop, listener, handler, nursery,
                                   router.metrics)
            task_status.started(listeners[0].socket.getsockname()[1])
    finally:
        for listener in listeners:
            listener.socket.close()
