"""The HTTP front door over real sockets (contract §8, §15): keep-alive, pipelining,
limits, time-outs, and bad input answered with what to fix."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from roomcast import http as http_front
from roomcast.httpwire import MAX_HEAD_BYTES
from tests.support import WAIT, connect, free_port, http_request, running_server

KEY = "test-api-key-0123456789"


class RawHttp:
    """One client connection: bytes out, whole responses (status, headers, body) in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _more(self) -> bool:
        chunk = await self.stream.receive_some(65536)
        self.buffer += chunk
        return bool(chunk)

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        with trio.fail_after(WAIT):
            while b"\r\n\r\n" not in self.buffer:
                if not await self._more():
                    raise ConnectionError(f"closed before a whole head: {self.buffer!r}")
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            while len(self.buffer) < length:
                if not await self._more():
                    raise ConnectionError("closed mid-body")
            body, self.buffer = self.buffer[:length], self.buffer[length:]
            return int(status_line.split()[1]), headers, body

    async def closed(self) -> bool:
        """Whether the server closes the connection (without sending anything more)."""
        with trio.fail_after(WAIT):
            try:
                return await self.stream.receive_some(65536) == b""
            except trio.BrokenResourceError:
                return True


@asynccontextmanager
async def raw(router: Any) -> AsyncIterator[RawHttp]:
    stream = await trio.open_tcp_stream("127.0.0.1", router.http_port)
    async with stream:
        yield RawHttp(stream)


def api_server(**overrides: Any) -> Any:
    return running_server(http_port=free_port(), api_key=KEY, **overrides)


def publish_request(room: str, data: Any, extra: str = "") -> bytes:
    body = json.dumps({"room": room, "data": data}).encode()
    return (f"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


async def test_one_connection_carries_many_requests() -> None:
    async with api_server() as router, raw(router) as client:
        for n in range(1, 6):
            await client.send(publish_request("project:1", n))
            status, headers, body = await client.response()
            assert status == 200
            assert "connection" not in headers  # kept open
            assert json.loads(body)["offset"] == n
        await client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.response())[0] == 200


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with api_server() as router, connect(router) as alice, raw(router) as client:
        await alice.subscribe("project:1")
        await client.send(b"".join(publish_request("project:1", n) for n in range(1, 51))
                          + b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        offsets = [json.loads((await client.response())[2])["offset"] for _ in range(50)]
        assert offsets == list(range(1, 51))
        assert json.loads((await client.response())[2]) == {"status": "ready"}
        got = [(await alice.recv_type("message"))["data"] for _ in range(50)]
        assert got == list(range(1, 51))


async def test_connection_close_is_honoured_after_the_answer() -> None:
    async with api_server() as router, raw(router) as client:
        await client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = await client.response()
        assert (status, headers["connection"]) == (200, "close")
        assert await client.closed()  # the second request is never answered


async def test_a_body_sent_in_pieces_is_waited_for() -> None:
    async with api_server() as router, raw(router) as client:
        request = publish_request("project:1", "slow but in time")
        for i in range(0, len(request), 7):
            await client.send(request[i:i + 7])
            await trio.sleep(0.002)  # separate reads on the server side
        assert (await client.response())[0] == 200


async def test_expect_100_continue_gets_its_interim_answer() -> None:
    async with api_server() as router, raw(router) as client:
        request = publish_request("project:1", 1, "Expect: 100-continue\r\n")
        head, _, body = request.partition(b"\r\n\r\n")
        await client.send(head + b"\r\n\r\n")
        assert (await client.response())[0] == 100
        await client.send(body)
        assert (await client.response())[0] == 200


async def test_head_gets_the_headers_without_the_body() -> None:
    async with api_server() as router, raw(router) as client:
        await client.send(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                          b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.stream.send_eof()
        with trio.fail_after(WAIT):
            while await client._more():
                pass
        head_answer, _, rest = client.buffer.partition(b"\r\n\r\n")
        assert head_answer.startswith(b"HTTP/1.1 200 ")
        assert b"Content-Length: 15" in head_answer
        assert rest.startswith(b"HTTP/1.1 200 ")  # no body between the two answers
        assert rest.endswith(b'{"status":"ok"}')


@pytest.mark.parametrize(("request_bytes", "status", "error"), [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
                 431, "too_large", id="head-too-long"),
    pytest.param(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413,
                 "too_large", id="body-too-long-by-its-length"),
    pytest.param(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                 501, "not_implemented", id="gzip"),
    pytest.param(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"801\r\n", 413, "too_large", id="chunked-body-too-long"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400, "bad_request",
                 id="malformed-header"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "bad_request",
                 id="tls-hello"),
])
async def test_a_request_over_a_limit_or_unreadable_is_answered_and_closed(
        request_bytes: bytes, status: int, error: str) -> None:
    async with api_server(max_message_bytes=1024) as router, raw(router) as client:
        await client.send(request_bytes)
        got, headers, body = await client.response()
        assert (got, headers["connection"]) == (status, "close")
        assert json.loads(body)["error"] == error
        assert len(json.loads(body)["message"]) > 20
        assert await client.closed()
        assert router.metrics.handler_errors == 0


async def test_a_head_longer_than_the_limit_is_refused_before_it_ends() -> None:
    async with api_server() as router, raw(router) as client:
        await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 10))
        assert (await client.response())[0] == 431  # without waiting for the rest


async def test_a_slow_head_is_closed_after_the_time_out() -> None:
    async with api_server(handshake_timeout=0.3) as router, raw(router) as client:
        await client.send(b"GET /healthz HTTP/1.1\r\nHo")
        started = trio.current_time()
        status, _, body = await client.response()
        assert (status, json.loads(body)["error"]) == (408, "timeout")
        assert await client.closed()
        assert 0.25 < trio.current_time() - started < 3


async def test_a_slow_body_is_closed_after_the_time_out() -> None:
    async with api_server(http_body_timeout=0.3) as router, raw(router) as client:
        await client.send(publish_request("project:1", "x" * 100)[:-10])
        started = trio.current_time()
        assert (await client.response())[0] == 408
        assert await client.closed()
        assert 0.25 < trio.current_time() - started < 3
        assert router.metrics.publishes == 0


async def test_a_slow_trickle_does_not_extend_the_time_out() -> None:
    async with api_server(handshake_timeout=0.5) as router, raw(router) as client:
        started = trio.current_time()
        with trio.move_on_after(3):
            try:
                for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100:
                    await client.send(bytes([byte]))
                    await trio.sleep(0.05)
            except trio.BrokenResourceError:
                pass
        assert (await client.response())[0] == 408
        assert trio.current_time() - started < 2


async def test_an_idle_keep_alive_connection_is_closed_quietly() -> None:
    async with api_server(http_keepalive_timeout=0.3) as router, raw(router) as client:
        await client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.response())[0] == 200
        assert await client.closed()
        assert client.buffer == b""  # no 408 for a connection that asked nothing


async def test_a_connection_that_never_sends_is_closed_after_the_handshake_time_out() -> None:
    async with api_server(handshake_timeout=0.3) as router, raw(router) as client:
        assert await client.closed()
        assert client.buffer == b""


async def test_a_malformed_json_body_says_what_to_send() -> None:
    async with api_server() as router:
        response = await http_request(router, "POST", "/api/publish", api_key=KEY,
                                      body=b'{"room": "project:1", "data": ')
        assert response.status == 400
        assert "send a JSON object like" in response.json()["message"]


async def test_keep_alive_goes_on_after_an_ordinary_error() -> None:
    async with api_server() as router, raw(router) as client:
        await client.send(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
                          b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                          + publish_request("project:1", 1))
        assert [(await client.response())[0] for _ in range(3)] == [404, 401, 200]


async def test_draining_answers_close_the_connection() -> None:
    async with api_server(shutdown_grace=60) as router, connect(router, sub="a") as alice, \
            connect(router, sub="b"), raw(router) as client:
        router.shutdown()
        await alice.closed()
        await client.send(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = await client.response()
        assert (status, headers["connection"]) == (503, "close")


async def test_a_request_on_another_ports_front_door_is_served_there() -> None:
    """serve_request: the hook for serving HTTP on the WebSocket port."""
    from roomcast import websocket as ws

    async with api_server() as router:
        async def one_port(stream: trio.SocketStream) -> None:
            data = b""
            while (head := ws.parse_request_head(data)) is None:
                data += await stream.receive_some(65536)
            await http_front.serve_request(router, stream, head)

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, one_port, 0)
            port = listeners[0].socket.getsockname()[1]
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                client = RawHttp(stream)
                await client.send(publish_request("project:1", 1)
                                  + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await client.response())[0] == 200
                assert (await client.response())[2] == b'{"status":"ok"}'
            nursery.cancel_scope.cancel()
        assert router.metrics.publishes == 1


async def test_a_chunked_body_is_read_as_it_comes() -> None:
    async with api_server() as router, connect(router) as alice, raw(router) as client:
        await alice.subscribe("project:1")
        body = json.dumps({"room": "project:1", "data": "in pieces"}).encode()
        await client.send(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                          + KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 10):
            piece = body[i:i + 10]
            await client.send(b"%x\r\n%b\r\n" % (len(piece), piece))
        await client.send(b"0\r\n\r\n")
        status, _, answer = await client.response()
        assert (status, json.loads(answer)["offset"]) == (200, 1)
        assert (await alice.recv_type("message"))["data"] == "in pieces"


async def test_a_websocket_upgrade_on_the_http_port_says_where_the_websocket_port_is() -> None:
    async with api_server() as router, raw(router) as client:
        await client.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        status, _, body = await client.response()
    assert status == 403
    answer = json.loads(body)
    assert answer["error"] == "forbidden"
    assert f":{router.ws_port}/ws" in answer["message"]
