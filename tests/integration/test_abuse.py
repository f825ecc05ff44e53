"""Bounded abuse over real sockets: what a few valid tokens cannot do to a node.

An unfinished message has message_timeout to finish (4408); all connections together hold
at most max_held_bytes in unfinished messages (the largest holder is closed 1013); ping
and pong floods are counted by the rate limit (4429); refused handshakes are logged once
per reason per interval; silent connections never hold the handshake gate.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from wsproto.events import Pong

from roomcast.fuzz import Closed, RawClient
from roomcast.router import Router
from tests.support import WAIT, connect, make_token, running_server

TEXT, CONTINUATION, PING, PONG = 0x1, 0x0, 0x9, 0xA


@asynccontextmanager
async def raw(router: Router, sub: str) -> AsyncIterator[RawClient]:
    assert router.ws_port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", router.ws_port)
    client = RawClient(stream)
    await client.handshake("127.0.0.1", f"/ws?token={make_token(sub, rooms=['*'])}")
    hello = await client.receive()
    assert isinstance(hello, str) and json.loads(hello)["type"] == "connected"
    try:
        yield client
    finally:
        await trio.aclose_forcefully(stream)


async def closed(client: RawClient) -> Closed:
    with trio.fail_after(WAIT):
        while not isinstance(event := await client.receive(), Closed):
            pass
    return event


async def test_a_message_that_does_not_finish_within_message_timeout_is_closed_4408() -> None:
    async with running_server(message_timeout=0.5) as router, raw(router, "slow") as slow:
        await slow.raw_frame(TEXT, b'{"type": "pi', fin=False)
        await slow.raw_frame(CONTINUATION, b"n", fin=False)  # trickling does not help
        start = trio.current_time()
        close = await closed(slow)
        assert close.code == 4408 and "not finished in time" in close.reason
        assert 0.3 <= trio.current_time() - start < 0.5 + WAIT


async def test_a_message_finished_in_time_is_answered_and_resets_the_clock() -> None:
    async with running_server(message_timeout=0.5) as router, raw(router, "ok") as client:
        for _ in range(3):
            await client.raw_frame(TEXT, b'{"type": "pi', fin=False)
            await client.raw_frame(CONTINUATION, b'ng", "id": 1}', fin=True)
            reply = await client.receive()
            assert isinstance(reply, str) and json.loads(reply)["type"] == "pong"
        with trio.move_on_after(0.8):  # idle between messages: no time limit at all
            event = await client.receive()
            raise AssertionError(f"an idle connection got {event!r}")


async def test_over_max_held_bytes_the_connection_holding_most_is_closed_1013() -> None:
    async with running_server(max_held_bytes=100_000) as router, \
            raw(router, "big") as big, raw(router, "small") as small, \
            connect(router, sub="bystander") as bystander:
        await small.raw_frame(TEXT, b'{"type": "ping", "pad": "' + b"s" * 30_000, fin=False)
        await big.raw_frame(TEXT, b'{"type": "ping", "pad": "' + b"b" * 50_000, fin=False)
        assert router.metrics.closes[1013] == 0
        await big.raw_frame(CONTINUATION, b"b" * 30_000, fin=False)  # 110 kB in all now
        close = await closed(big)
        assert close.code == 1013 and "capacity" in close.reason
        await small.raw_frame(CONTINUATION, b'", "id": 7}', fin=True)  # the other lives on
        reply = await small.receive()
        assert isinstance(reply, str) and json.loads(reply)["id"] == 7
        assert (await bystander.call({"type": "ping", "id": 1}))["type"] == "pong"


async def test_a_ping_flood_is_answered_until_it_is_closed_4429() -> None:
    async with running_server(rate_per_second=20, rate_burst=40) as router, \
            raw(router, "flood") as flood, connect(router, sub="bystander") as bystander:
        for _ in range(200):
            await flood.raw_frame(PING, b"p")
        pongs = 0
        with trio.fail_after(WAIT):
            while not isinstance(event := await flood.receive(), Closed):
                pongs += isinstance(event, Pong)
        assert event.code == 4429 and "control frames" in event.reason
        assert pongs >= 40  # every ping within the burst was answered (RFC 6455)
        assert (await bystander.call({"type": "ping", "id": 1}))["type"] == "pong"


async def test_unsolicited_pongs_count_against_the_rate_limit() -> None:
    async with running_server(rate_per_second=20, rate_burst=40) as router, \
            raw(router, "pongs") as client:
        for _ in range(200):
            await client.raw_frame(PONG, b"")
        assert (await closed(client)).code == 4429


async def test_refused_handshakes_are_logged_once_per_reason_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="roomcast")
    async with running_server(log_throttle_interval=60) as router:
        assert router.ws_port is not None
        for _ in range(30):
            stream = await trio.open_tcp_stream("127.0.0.1", router.ws_port)
            client = RawClient(stream)
            await client.handshake("127.0.0.1", "/ws?token=not-a-jwt")
            assert (await closed(client)).code == 4401
            await stream.aclose()
        assert router.metrics.auth_failures["malformed"] == 30
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1, lines


async def test_silent_connections_never_hold_the_handshake_gate() -> None:
    async with running_server(max_handshakes=1, handshake_timeout=3) as router:
        assert router.ws_port is not None
        silent = [await trio.open_tcp_stream("127.0.0.1", router.ws_port) for _ in range(5)]
        try:
            with trio.fail_after(1.0):  # long before the silent ones time out
                async with connect(router, sub="late") as late:
                    assert (await late.call({"type": "ping", "id": 1}))["type"] == "pong"
        finally:
            for stream in silent:
                await stream.aclose()
