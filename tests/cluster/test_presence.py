"""Presence is shared by every node (protocol §4 presence, §5 joined/left, §9): counts add
up across nodes, and joined/left fire on the cluster-wide first and last connection."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from tests.cluster.conftest import RedisServer, cluster, wait_until
from tests.support import WAIT, Client, connect, make_token, running_server


def token(sub: str, **info: Any) -> str:
    return make_token(sub, rooms=["*"], publish=["*"], info=info)


async def presence_of(client: Client, room: str) -> dict[str, tuple[int, Any]]:
    reply = await client.call({"type": "presence", "id": "p", "room": room})
    return {u["user_id"]: (u["connections"], u["info"]) for u in reply["users"]}


async def count_becomes(client: Client, room: str, user: str, count: int) -> None:
    """Wait (under WAIT) until presence shows `count` connections of `user`: a node writes
    a presence change to Redis after it has answered the command that made it."""
    with trio.fail_after(WAIT):
        while (await presence_of(client, room)).get(user, (0,))[0] != count:  # noqa: ASYNC110
            await trio.sleep(0.01)  # nothing signals another node's write landing


async def next_presence_event(client: Client) -> dict[str, Any]:
    with trio.fail_after(WAIT):
        while True:
            frame = await client.recv()
            if frame["type"] in ("joined", "left"):
                return frame


async def test_presence_counts_connections_on_every_node(redis: RedisServer) -> None:
    async with cluster(redis, "n1", "n2") as (a, b), AsyncExitStack() as stack:
        clients = []
        for node, sub in ((a, "amy"), (a, "amy"), (b, "amy"), (b, "bob")):
            client = await stack.enter_async_context(connect(node, token(sub, team=sub)))
            await client.subscribe("lobby")
            clients.append(client)
        expected = {"amy": (3, {"team": "amy"}), "bob": (1, {"team": "bob"})}
        assert await presence_of(clients[0], "lobby") == expected
        assert await presence_of(clients[3], "lobby") == expected
        await clients[2].call({"type": "unsubscribe", "id": "u", "rooms": ["lobby"]})
        await count_becomes(clients[3], "lobby", "amy", 2)


async def test_joined_and_left_follow_the_cluster_wide_first_and_last_connection(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2") as (a, b), \
            connect(a, token("watcher")) as watcher:
        await watcher.subscribe("desk", presence=True)
        assert await next_presence_event(watcher) == {
            "type": "joined", "room": "desk", "user_id": "watcher", "info": {}}
        async with connect(b, token("bob", mood="ok")) as bob_b:
            await bob_b.subscribe("desk")
            assert await next_presence_event(watcher) == {
                "type": "joined", "room": "desk", "user_id": "bob", "info": {"mood": "ok"}}
            async with connect(a, token("bob", mood="ok")) as bob_a:
                await bob_a.subscribe("desk")  # bob's second connection: no event
                await bob_b.call({"type": "unsubscribe", "id": 1, "rooms": ["desk"]})
                await count_becomes(watcher, "desk", "bob", 1)  # still there
            # bob's last connection went away (on the watcher's own node)
            assert await next_presence_event(watcher) == {
                "type": "left", "room": "desk", "user_id": "bob"}
        with trio.move_on_after(0.3):
            frame = await next_presence_event(watcher)
            raise AssertionError(f"an extra presence event: {frame}")


async def test_a_node_that_stops_takes_its_users_out_of_presence_at_once(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", presence_ttl=60) as (a,), \
            connect(a, token("watcher")) as watcher:
        await watcher.subscribe("hall", presence=True)
        await next_presence_event(watcher)  # the watcher itself
        async with running_server(backplane=redis.url, node="n2", presence_ttl=60) as b:
            await wait_until(lambda: b.ready)
            async with connect(b, token("carl")) as carl:
                await carl.subscribe("hall")
                assert (await next_presence_event(watcher))["type"] == "joined"
                # the node stops with carl still connected
        assert await next_presence_event(watcher) == {
            "type": "left", "room": "hall", "user_id": "carl"}
        assert set(await presence_of(watcher, "hall")) == {"watcher"}


@pytest.mark.single_redis
async def test_presence_is_restored_after_redis_restarts_empty(redis: RedisServer) -> None:
    async with cluster(redis, "n1", "n2") as (a, b), connect(a, token("amy")) as amy, \
            connect(b, token("bob")) as bob:
        await amy.subscribe("room")
        await bob.subscribe("room")
        assert set(await presence_of(amy, "room")) == {"amy", "bob"}
        redis.kill()
        await wait_until(lambda: not a.ready and not b.ready)
        redis.start()
        await wait_until(lambda: a.ready and b.ready, timeout=15)
        await wait_until(lambda: redis.command("HLEN", "rc:{room}:p") == b":2\r\n")
        assert await presence_of(amy, "room") == {"amy": (1, {}), "bob": (1, {})}
