"""The HTTP port's limits as settings, over real sockets: head and batch sizes, and how
many connections it serves at once (the time-outs are in test_http_frontdoor.py)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import trio

from tests.integration.test_http_frontdoor import KEY, RawHttp, api_server, publish_request, raw
from tests.support import WAIT


def head_of(size: int) -> bytes:
    """A GET /healthz head of exactly `size` bytes, its blank line included."""
    start = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


def batch_request(size: int) -> bytes:
    """A one-publish /api/batch request whose body is about `size` bytes."""
    command = {"method": "publish", "params": {"room": "project:1", "data": ""}}
    overhead = len(json.dumps({"commands": [command]}))
    command["params"]["data"] = "x" * (size - overhead)
    body = json.dumps({"commands": [command]}).encode()
    return (f"POST /api/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def test_a_lower_head_limit_refuses_longer_heads() -> None:
    async with api_server(http_max_head_bytes=1024) as router:
        async with raw(router) as client:
            await client.send(head_of(1024))
            assert (await client.response())[0] == 200
        async with raw(router) as client:
            await client.send(head_of(1025))
            status, _, body = await client.response()
            assert status == 431
            assert "http_max_head_bytes" in json.loads(body)["message"]
            assert await client.closed()


async def test_a_higher_head_limit_takes_a_long_head_in_pieces() -> None:
    async with api_server(http_max_head_bytes=40_000) as router:
        async with raw(router) as client:
            head = head_of(30_000)
            for i in range(0, len(head), 7000):
                await client.send(head[i:i + 7000])
            assert (await client.response())[0] == 200
            await client.send(head_of(20_000))  # keep-alive goes on
            assert (await client.response())[0] == 200
        async with raw(router) as client:
            await client.send(head_of(40_001))
            assert (await client.response())[0] == 431
            assert await client.closed()


async def test_the_batch_body_limit_is_the_setting() -> None:
    async with api_server(max_message_bytes=1000, http_max_batch_bytes=5000) as router:
        async with raw(router) as client:
            await client.send(batch_request(3000))
            status, _, body = await client.response()
            assert status == 200, body
            assert "result" in json.loads(body)["replies"][0]
            await client.send(publish_request("project:1", "x" * 3000))
            status, _, body = await client.response()
            assert status == 413 and "max_message_bytes" in json.loads(body)["message"]
        async with raw(router) as client:
            await client.send(batch_request(6000))
            status, _, body = await client.response()
            assert status == 413 and "http_max_batch_bytes" in json.loads(body)["message"]
            assert await client.closed()


async def _opened(router: Any) -> tuple[trio.SocketStream, RawHttp]:
    stream = await trio.open_tcp_stream("127.0.0.1", router.http_port)
    return stream, RawHttp(stream)


async def test_past_the_connection_limit_a_new_connection_gets_503_and_is_closed() -> None:
    async with api_server(http_max_connections=2) as router:
        held = [await _opened(router) for _ in range(2)]
        for _, client in held:  # both are being served: each has had an answer
            await client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await client.response())[0] == 200
        stream, extra = await _opened(router)
        async with stream:
            status, headers, body = await extra.response()
            assert (status, headers["retry-after"]) == (503, "1")
            assert "http_max_connections" in json.loads(body)["message"]
            assert await extra.closed()
        await held[0][0].aclose()  # one leaves: a new connection is served again
        with trio.fail_after(WAIT):
            while True:
                stream, again = await _opened(router)
                async with stream:
                    with contextlib.suppress(trio.BrokenResourceError):  # 503 and closed
                        await again.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    if (await again.response())[0] == 200:
                        break
                await trio.sleep(0.02)  # the server has not yet seen the close
        await held[1][0].aclose()
