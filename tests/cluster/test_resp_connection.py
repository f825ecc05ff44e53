"""The Redis backplane's connection (backplane/redis/wire.py), on a redis-server of its
own: pipelined replies reach their callers in order, errors are Redis' own, a caller that
gives up does not shift anyone's reply, a Redis that stops answering or dies fails every
waiting request at once, and pub/sub messages reach their consumer in order, in batches,
with reading paused (nothing lost) while it falls behind."""

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
from roomcast.backplane.redis.wire import RespConnection, pack
from tests.cluster.conftest import RedisServer, own_redis
from tests.support import WAIT, free_port

# Publishes "m<i>" repeated ARGV[3] times, for i from 0 to ARGV[2]-1, in order, at once.
PUBLISH_N = ("for i = 0, tonumber(ARGV[2]) - 1 do redis.call(ARGV[1], KEYS[1], "
             "string.rep('m' .. i, tonumber(ARGV[3]))) end")


@asynccontextmanager
async def running(server: RedisServer, **kwargs: Any) -> AsyncIterator[RespConnection]:
    conn = RespConnection(TCPLocation("127.0.0.1", server.port), **kwargs)
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
        conn = RespConnection(TCPLocation("127.0.0.1", server.port), stream_timeout=0.5)
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
        conn = RespConnection(TCPLocation("127.0.0.1", server.port))
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
    refused = RespConnection(TCPLocation("127.0.0.1", free_port()))
    with trio.fail_after(WAIT), pytest.raises(RedisConnectionError, match="cannot connect"):
        await refused.run()
    with own_redis() as server:
        assert server.command("ACL", "SETUSER", "app", "on", ">right", "~*", "&*",
                              "+@all").startswith(b"+OK")
        wrong = RespConnection(TCPLocation("127.0.0.1", server.port),
                                  username="app", password="wrong")
        with trio.fail_after(WAIT), pytest.raises(AuthenticationFailureError):
            await wrong.run()
        async with running(server, username="app", password="right") as conn:
            with trio.fail_after(WAIT):
                assert await conn.create_request(b"ACL", b"WHOAMI") == b"app"


async def test_pubsub_messages_arrive_in_order_in_batches() -> None:
    with own_redis() as server:
        async with running(server) as sub, running(server) as pub:
            sub.send_command(b"SSUBSCRIBE", b"ch")
            with trio.fail_after(WAIT):
                assert await sub.next_pushes() == [[b"ssubscribe", b"ch", 1]]
                await pub.create_request(b"EVAL", PUBLISH_N, 1, "ch", b"SPUBLISH", 1000, 1)
                got: list[Any] = []
                batches = 0
                while len(got) < 1000:
                    got += await sub.next_pushes()
                    batches += 1
            assert got == [[b"smessage", b"ch", f"m{i}".encode()] for i in range(1000)]
            assert batches < 1000  # several messages per wake-up


async def test_a_consumer_that_falls_behind_pauses_reading_and_loses_nothing() -> None:
    with own_redis() as server:
        async with running(server) as sub, running(server) as pub:
            sub.max_pushes = 10
            sub.send_command(b"SUBSCRIBE", b"ch")
            with trio.fail_after(WAIT):
                await sub.next_pushes()  # the confirmation
                await pub.create_request(b"EVAL", PUBLISH_N, 1, "ch", b"PUBLISH", 2000, 50)
                while sub._reader_parked is None:  # noqa: ASYNC110 - the reader parks itself
                    await trio.sleep(0.01)
                held = len(sub._pushes)
                got: list[Any] = []
                while len(got) < 2000:
                    got += await sub.next_pushes()
            assert 10 <= held < 2000  # it stopped reading with the rest still in Redis
            assert [push[2] for push in got] == [f"m{i}".encode() * 50 for i in range(2000)]


async def test_the_consumer_gets_what_was_read_then_the_reason_the_connection_ended() -> None:
    with own_redis() as server:
        conn = RespConnection(TCPLocation("127.0.0.1", server.port))
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                await nursery.start(conn.run)
                conn.send_command(b"SUBSCRIBE", b"ch")
                await conn.next_pushes()  # the confirmation
                assert server.command("PUBLISH", "ch", "last").startswith(b":1")
                server.kill()
            batch = await conn.next_pushes()  # read before the end: still handed over
            assert batch[-1] == [b"message", b"ch", b"last"]
            with pytest.raises(RedisConnectionError, match="closed"):
                await conn.next_pushes()
