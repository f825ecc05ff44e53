"""Chaos under load (protocol §17): two `roomcast serve` processes on one real redis-server,
Redis killed and restarted empty several times, a node killed with SIGKILL; independent
subscribers and HTTP publishers record everything, and no accepted message may be skipped
without a `reset` or a `missed`.

By default each test takes well under a minute. `ROOMCAST_CHAOS_RUNS=N` restarts Redis N
times instead of twice (Redis down `ROOMCAST_CHAOS_DOWN` s each time, 5 by default then;
`ROOMCAST_CHAOS_HISTORY` messages of history per room, 25 by default) and prints the
totals, for the record:

    ROOMCAST_CHAOS_RUNS=10 .venv/bin/python -m pytest tests/chaos -q -p no:cacheprovider
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from tests.chaos.harness import Publishers, Subscriber, Totals, http, judge
from tests.cluster.conftest import RedisServer, node_process
from tests.support import WAIT, ServerProcess

RUNS = int(os.environ.get("ROOMCAST_CHAOS_RUNS") or 0)
DOWN = float(os.environ.get("ROOMCAST_CHAOS_DOWN") or (5.0 if RUNS else 1.5))
LOAD = 1.5  # seconds of load with everything up, between faults
BACK = 20.0  # seconds the nodes may take to be ready again after a fault
# Messages each node keeps per room in the Redis test: few, so that a node back later than
# the other finds the new stream's start gone and its subscribers get `missed` as well.
HISTORY = int(os.environ.get("ROOMCAST_CHAOS_HISTORY") or 25)
STALL = 1.0  # seconds one node stays stopped once the other is back
SETTLE = 10.0  # seconds subscribers may take to get the last messages once load stops
ROOMS = ["chaos:a", "chaos:b", "chaos:c"]


@asynccontextmanager
async def scene(redis: RedisServer, *args: str) -> AsyncIterator[
        tuple[list[ServerProcess], list[Subscriber], Publishers]]:
    """Two nodes (`args` added to their command line), two subscribers homed on each,
    publishers running until `stop`."""
    async with node_process(redis, "c1", *args) as n1, node_process(redis, "c2", *args) as n2:
        nodes = [n1, n2]
        urls = [node.ws_url() for node in nodes]
        subscribers = [Subscriber(f"s{k}", ROOMS, urls[k % 2:] + urls[:k % 2])
                       for k in range(4)]
        publishers = Publishers(nodes, ROOMS)
        async with trio.open_nursery() as nursery:
            for sub in subscribers:
                nursery.start_soon(sub.run)
            with trio.fail_after(WAIT):
                for sub in subscribers:
                    await sub.ready.wait()
            nursery.start_soon(publishers.run)
            yield nodes, subscribers, publishers
            publishers.stop.set()
            await settle(publishers, subscribers)
            nursery.cancel_scope.cancel()


async def settle(publishers: Publishers, subscribers: list[Subscriber]) -> None:
    """Wait (bounded) until every accepted message has reached or been announced to every
    subscriber; nothing signals that, so the judgement is polled."""
    with trio.move_on_after(SETTLE):
        while judge(publishers, subscribers).silently_lost:  # noqa: ASYNC110
            await trio.sleep(0.2)


async def all_ready(nodes: list[ServerProcess]) -> None:
    """Wait until every node answers /readyz with 200 (Redis reachable again)."""
    with trio.fail_after(BACK):
        for node in nodes:
            while True:
                try:
                    status, _ = await http(node.http_port, "GET", "/readyz", timeout=1)
                except (OSError, trio.TooSlowError, trio.BrokenResourceError, ValueError):
                    status = 0
                if status == 200:
                    break
                await trio.sleep(0.05)


async def restart_redis(redis: RedisServer, nodes: list[ServerProcess],
                        stall: ServerProcess) -> None:
    """SIGKILL Redis, leave it down DOWN s, start it empty, and hold `stall` stopped
    (SIGSTOP) until STALL s after the other node is back, so that the other one surely takes
    publishes into the new stream first; then wait for both."""
    await trio.to_thread.run_sync(redis.kill)
    await trio.sleep(DOWN)  # the outage itself
    assert stall.process is not None
    os.kill(stall.process.pid, signal.SIGSTOP)
    try:
        await trio.to_thread.run_sync(redis.start)
        await all_ready([node for node in nodes if node is not stall])
        await trio.sleep(STALL)  # the other node's publishes go on meanwhile
    finally:
        os.kill(stall.process.pid, signal.SIGCONT)
    await all_ready(nodes)


def record(totals: Totals, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\nchaos totals: {totals.line()}")
    assert totals.accepted > 0 and totals.delivered > 0, totals.line()
    assert (totals.silently_lost, totals.duplicates, totals.gaps) == (0, 0, 0), (
        totals.line(), totals.examples)


async def test_redis_restarted_empty_under_load_loses_nothing_silently(
    redis: RedisServer, capsys: pytest.CaptureFixture[str],
) -> None:
    restarts = RUNS or 2
    async with scene(redis, "--history-size", str(HISTORY)) as (nodes, subscribers, publishers):
        await trio.sleep(LOAD)  # load with everything up
        for k in range(restarts):
            await restart_redis(redis, nodes, stall=nodes[k % 2])
            await trio.sleep(LOAD)
    totals = judge(publishers, subscribers)
    totals.redis_restarts = restarts
    record(totals, capsys)
    assert totals.resets > 0, "no subscriber was told of a replaced stream"


async def test_a_node_killed_under_load_loses_nothing_silently(
    redis: RedisServer, capsys: pytest.CaptureFixture[str],
) -> None:
    async with scene(redis) as (nodes, subscribers, publishers):
        await trio.sleep(LOAD)
        await trio.to_thread.run_sync(nodes[0].kill)
        await trio.sleep(LOAD)  # its clients resume on the other node meanwhile
        await trio.to_thread.run_sync(nodes[0].start)
        await all_ready(nodes)
        await trio.sleep(LOAD)
    totals = judge(publishers, subscribers)
    totals.node_kills = 1
    record(totals, capsys)
    assert sum(sub.connections for sub in subscribers) > len(subscribers)  # some resumed
