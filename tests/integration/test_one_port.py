"""HTTP and WebSocket on one port (`http_on_ws_port`), over real sockets: the server API,
metrics and health on the WebSocket port, keep-alive included, while WebSockets still
connect there; without the setting, the port answers plain HTTP with 426 as before."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from tests.integration.test_http_frontdoor import KEY, RawHttp, publish_request
from tests.support import connect, running_server


@asynccontextmanager
async def on_ws_port(router: Any) -> AsyncIterator[RawHttp]:
    stream = await trio.open_tcp_stream("127.0.0.1", router.ws_port)
    async with stream:
        yield RawHttp(stream)


async def test_the_api_and_metrics_are_served_on_the_websocket_port() -> None:
    async with running_server(http_port=0, api_key=KEY, http_on_ws_port=True) as router, \
            connect(router, sub="alice") as alice:
        await alice.subscribe("project:1")
        async with on_ws_port(router) as client:
            await client.send(publish_request("project:1", {"n": 1}))
            status, _, body = await client.response()
            assert status == 200, body
            assert json.loads(body)["offset"] == 1
            await client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # same connection
            status, headers, body = await client.response()
            assert status == 200 and headers["content-type"].startswith("text/plain")
            assert b"roomcast_http_requests_total" in body
        message = await alice.recv_type("message")
        assert (message["room"], message["data"]) == ("project:1", {"n": 1})


async def test_a_websocket_still_connects_on_the_shared_port_and_health_answers() -> None:
    async with running_server(http_port=0, http_on_ws_port=True) as router:
        async with connect(router, sub="bob") as bob:
            assert bob.connected["type"] == "connected"
        async with on_ws_port(router) as client:
            await client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                              b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (await client.response())[0] == 200
            assert (await client.response())[0] == 200
            assert await client.closed()


async def test_without_the_setting_plain_http_gets_426_as_before() -> None:
    async with running_server(http_port=0, api_key=KEY) as router:
        async with on_ws_port(router) as client:
            await client.send(publish_request("project:1", 1))
            status, headers, _ = await client.response()
            assert (status, headers["upgrade"]) == (426, "websocket")
            assert await client.closed()
        async with on_ws_port(router) as client:
            await client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await client.response())[0] == 200
        assert router.metrics.publishes == 0
