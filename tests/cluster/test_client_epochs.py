"""roomcast.client across a replaced stream (protocol §17): real nodes on a real
redis-server that the test kills and starts again empty. The client gets a Reset before
the new stream, then every message of it (offsets start again at 1: none is taken for a
duplicate of the old stream's), and resumes in the new epoch after a reconnect."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from roomcast.client import (
    Backoff,
    Client,
    Event,
    Message,
    Position,
    Recovery,
    Reset,
    State,
    connect,
)
from roomcast.router import Router
from tests.cluster.conftest import RedisServer, cluster, wait_until
from tests.support import WAIT, make_token, ws_url

BACK = 15.0  # seconds a node may take to notice Redis is back
FAST = Backoff(initial=0.05, factor=1.5, maximum=0.5)

pytestmark = pytest.mark.single_redis  # kills and restarts its one redis-server


def token(sub: str) -> str:
    return make_token(sub, rooms=["*"], publish=["*"])


async def next_event(events: AsyncIterator[Event], timeout: float = WAIT) -> Event:
    with trio.fail_after(timeout):
        return await events.__anext__()


async def messages(events: AsyncIterator[Event], n: int) -> list[Message]:
    out = []
    for _ in range(n):
        event = await next_event(events)
        assert isinstance(event, Message), event
        out.append(event)
    return out


async def nothing_more(events: AsyncIterator[Event], window: float = 0.3) -> None:
    """Fail when another event arrives within `window` (a duplicate, say)."""
    with trio.move_on_after(window):
        event = await events.__anext__()
        raise AssertionError(f"unexpected event: {event}")


async def restart_redis(redis: RedisServer, *nodes: Router) -> None:
    """Kill Redis, wait until the nodes noticed, start it again empty."""
    redis.kill()
    await wait_until(lambda: not any(n.ready for n in nodes))
    redis.start()  # no persistence: every stream is gone


def slow_to_reconnect(node: Router, delay: float) -> None:
    """Make the node wait between delay/2 and delay before each reconnection attempt."""
    node.backplane.min_backoff = node.backplane.max_backoff = delay  # type: ignore[attr-defined]


async def publish(client: Client, room: str, n: int, start: int = 0) -> list[int]:
    return [(await client.publish(room, {"n": i})).offset for i in range(start, start + n)]


async def test_after_redis_restarts_empty_the_client_gets_a_reset_and_the_whole_new_stream(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1") as (node,), \
            connect(ws_url(node), token("alice"), backoff=FAST) as client:
        events = client.messages()
        old = (await client.subscribe("doc"))["doc"].epoch
        assert await publish(client, "doc", 5) == [1, 2, 3, 4, 5]
        assert [m.offset for m in await messages(events, 5)] == [1, 2, 3, 4, 5]
        await restart_redis(redis, node)
        await wait_until(lambda: node.ready, timeout=BACK)
        assert await publish(client, "doc", 5, start=100) == [1, 2, 3, 4, 5]  # a new stream
        reset = await next_event(events)
        assert isinstance(reset, Reset), reset
        assert (reset.room, reset.offset, reset.missed) == ("doc", 0, None)
        assert reset.epoch != old and reset.epoch_changed
        assert reset.previous == Position(5, old)
        got = await messages(events, 5)
        assert [(m.offset, m.data["n"]) for m in got] == [(n, 100 + n - 1) for n in range(1, 6)]
        await nothing_more(events)
        assert client.position("doc") == Position(5, reset.epoch)


async def test_a_hundred_messages_published_before_the_node_is_back_all_arrive(
    redis: RedisServer,
) -> None:
    """The second node comes back after the first one filled the new stream: its client
    gets the reset, then all of them, though each offset is one it had seen before."""
    async with cluster(redis, "first", "second") as (a, b), \
            connect(ws_url(b), token("bob"), backoff=FAST) as client:
        events = client.messages()
        old = (await client.subscribe("feed"))["feed"].epoch
        for n in range(100):
            await a.publish("feed", {"n": n})
        assert [m.offset for m in await messages(events, 100)] == list(range(1, 101))
        slow_to_reconnect(b, 4.0)
        await restart_redis(redis, a, b)
        await wait_until(lambda: a.ready, timeout=BACK)
        assert [await a.publish("feed", {"n": n}) for n in range(100)] == list(range(1, 101))
        await wait_until(lambda: b.ready, timeout=BACK)
        reset = await next_event(events)
        assert isinstance(reset, Reset) and reset.epoch != old, reset
        got = await messages(events, 100)
        assert [(m.offset, m.data["n"]) for m in got] == [(n + 1, n) for n in range(100)]
        await nothing_more(events)


class Gate:
    """A token function the test can hold shut, so a reconnect waits in it."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.open = trio.Event()
        self.open.set()

    async def __call__(self) -> str:
        await self.open.wait()
        return self.token


async def test_after_a_reset_a_reconnect_resumes_in_the_new_epoch(redis: RedisServer) -> None:
    gate = Gate(token("carol"))
    async with cluster(redis, "n1") as (node,), \
            connect(ws_url(node), gate, backoff=FAST) as client:
        events = client.messages()
        await client.subscribe("doc")
        await publish(client, "doc", 3)
        await messages(events, 3)
        await restart_redis(redis, node)
        await wait_until(lambda: node.ready, timeout=BACK)
        await publish(client, "doc", 2)
        reset = await next_event(events)
        assert isinstance(reset, Reset), reset
        assert [m.offset for m in await messages(events, 2)] == [1, 2]
        gate.open = trio.Event()  # the reconnect waits for the token until the test says
        await node.disconnect_user("carol", 4500, "go and come back")
        with trio.fail_after(WAIT):
            await client.wait_state(State.RECONNECTING)
        assert [await node.publish("doc", {"n": n}) for n in (10, 11)] == [3, 4]
        gate.open.set()
        recovery = await next_event(events)
        assert isinstance(recovery, Recovery) and recovery.recovered, recovery
        assert recovery.since == Position(2, reset.epoch) and recovery.epoch == reset.epoch
        got = await messages(events, 2)
        assert [(m.offset, m.data["n"], m.replayed) for m in got] == [(3, 10, True),
                                                                      (4, 11, True)]
        await nothing_more(events)
