"""The Redis backplane's command connection (backplane/redis/wire.py), on a redis-server of
its own: pipelined replies reach their callers in order, errors are Redis' own, a caller
that gives up does not shift anyone's reply, and a Redis that stops answering or dies
fails every waiting request at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from coredis.connection import TCPLocation
from coredis.exceptions import AuthenticationFailureError, NoScriptError
from coredis.exceptions import ConnectionError as RedisConnectionError

from roomcast.backplane.redis.scripts import Script, evalsha
from roomcast.backplane.redis.wire import CommandConnection, pack
from tests.cluster.conftest import RedisServer, own_redis
from tests.support import WAIT, free_port


@asynccontextmanager
async def running(server: RedisServer, **kwargs: Any) -> AsyncIterator[CommandConnection]:
    conn = CommandConnection(TCPLocation("127.0.0.1", server.port), **kwargs)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            await nursery.start(conn.run)
        try:
            yield conn
        finally:
            conn.invalidate()


def test_pack_writes_every_argument_as_a_bulk_string() -> None:
    assert pack(b"SET", ("k", b"v\r\n", 7, 0.5)) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n7\r\n$3\r\n0.5\r\n")


async def test_concurrent_requests_each_get_their_own_reply_and_the_client_is_named() -> None:
    with own_redis() as server:
        async with running(server, db=3, client_name="roomcast-test") as conn:
            replies: dict[int, Any] = {}

            async def echo(i: int) -> None:
                replies[i] = await conn.create_request(b"ECHO", f"request {i}")

            with trio.fail_after(WAIT):
                async with trio.open_nursery() as nursery:
                    for i in range(300):
                        nursery.start_soon(echo, i)
                info = await conn.create_request(b"CLIENT", b"INFO")
            assert replies == {i: f"request {i}".encode() for i in range(300)}
            assert b" name=roomcast-test " in info and b" db=3 " in info


async def test_a_large_request_and_small_ones_behind_it_keep_their_order() -> None:
    value = bytes(range(256)) * (16 * 1024)  # 4 MiB: more than a socket buffer takes
    with own_redis() as server:
        async with running(server) as conn:
            with trio.fail_after(WAIT):
                async with trio.open_nursery() as nursery:
                    results: list[Any] = []

                    async def small() -> None:
                        results.append(await conn.create_request(b"INCR", "n"))

                    nursery.start_soon(conn.create_request, b"SET", "big", value)
                    for _ in range(20):
                        nursery.start_soon(small)
                assert await conn.create_request(b"GET", "big") == value
            assert sorted(results) == list(range(1, 21))


async def test_error_replies_are_redis_errors_and_evalsha_falls_back_to_eval() -> None:
    script = Script("answer", "return {KEYS[1], tonumber(ARGV[1]) + 1}")
    with own_redis() as server:
        async with running(server) as conn:
            with trio.fail_after(WAIT):
                with pytest.raises(NoScriptError):
                    await conn.create_request(b"EVALSHA", script.sha, 1, "k", 1)
                assert await evalsha(conn, script, ["k"], [41], WAIT) == [b"k", 42]
                assert await conn.create_request(b"EVALSHA", script.sha, 1, "j", 1) == [b"j", 2]


async def test_a_caller_that_gives_up_does_not_take_the_next_reply() -> None:
    with own_redis() as server:
        async with running(server) as conn:
            with trio.move_on_after(0.05) as gave_up:
                await conn.create_request(b"BLPOP", "nothing", "0.3")  # answered at 0.3 s
            assert gave_up.cancelled_caught
            with trio.fail_after(WAIT):
                assert await conn.create_request(b"ECHO", "mine") == b"mine"


async def test_a_redis_that_stops_answering_fails_every_waiting_request() -> None:
    with own_redis() as server:
        conn = CommandConnection(TCPLocation("127.0.0.1", server.port), stream_timeout=0.5)
        failures: list[BaseException] = []

        async def ask() -> None:
            try:
                await conn.create_request(b"PING")
            except TimeoutError as exc:
                failures.append(exc)

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                await nursery.start(conn.run)
                server.pause()  # resumed by nothing: own_redis kills it (SIGKILL) at the end
                started = trio.current_time()
                for _ in range(3):
                    nursery.start_soon(ask)
                # run() returns once the connection is closed, and the nursery ends
            waited = trio.current_time() - started
        assert len(failures) == 3 and "did not answer" in str(failures[0])
        assert 0.5 <= waited < 0.5 + 2 * conn.watch_interval + 0.5
        with pytest.raises(TimeoutError):
            await conn.create_request(b"PING")  # closed: later requests fail at once


async def test_a_redis_that_dies_fails_requests_with_a_connection_error() -> None:
    with own_redis() as server:
        conn = CommandConnection(TCPLocation("127.0.0.1", server.port))
        failures: list[BaseException] = []

        async def wait_forever() -> None:
            try:
                await conn.create_request(b"BLPOP", "nothing", "0")
            except RedisConnectionError as exc:
                failures.append(exc)

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                await nursery.start(conn.run)
                nursery.start_soon(wait_forever)
                await trio.testing.wait_all_tasks_blocked()
                server.kill()
        assert len(failures) == 1 and "closed the connection" in str(failures[0])
        with pytest.raises(RedisConnectionError, match="closed"):
            await conn.create_request(b"PING")


async def test_set_up_failures_are_raised_by_run() -> None:
    refused = CommandConnection(TCPLocation("127.0.0.1", free_port()))
    with trio.fail_after(WAIT), pytest.raises(RedisConnectionError, match="cannot connect"):
        await refused.run()
    with own_redis() as server:
        assert server.command("ACL", "SETUSER", "app", "on", ">right", "~*", "&*",
                              "+@all").startswith(b"+OK")
        wrong = CommandConnection(TCPLocation("127.0.0.1", server.port),
                                  username="app", password="wrong")
        with trio.fail_after(WAIT), pytest.raises(AuthenticationFailureError):
            await wrong.run()
        async with running(server, username="app", password="right") as conn:
            with trio.fail_after(WAIT):
                assert await conn.create_request(b"ACL", b"WHOAMI") == b"app"
