"""No silent loss across a Redis restart or a gap history can no longer fill (protocol
§17): a node's subscribers get a `reset` before anything of a replaced stream, then every
message of it, each once."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from roomcast.metrics_export import registry_for, render
from roomcast.router import Router
from tests.cluster.conftest import RedisServer, cluster, wait_until
from tests.support import Client, connect

BACK = 15.0  # seconds a node may take to notice Redis is back

pytestmark = pytest.mark.single_redis  # kills and restarts its one redis-server


def slow_to_reconnect(node: Router, delay: float) -> None:
    """Make the node wait between delay/2 and delay before each reconnection attempt."""
    node.backplane.min_backoff = node.backplane.max_backoff = delay  # type: ignore[attr-defined]


def counters(node: Router) -> tuple[int, int]:
    backplane: Any = node.backplane
    return backplane.resets, backplane.lost


async def nothing_more(client: Client, room: str, window: float = 0.3) -> None:
    """Fail when another frame of `room` arrives within `window` (a duplicate, say)."""
    with trio.move_on_after(window):
        frame = await client.recv()
        if frame.get("room") == room:
            raise AssertionError(f"unexpected frame: {frame}")


async def restart_redis(redis: RedisServer, *nodes: Router) -> None:
    redis.kill()
    await wait_until(lambda: not any(n.ready for n in nodes))
    redis.start()  # empty: no persistence


async def test_publishes_accepted_by_the_first_node_back_reach_the_second_after_a_reset(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "first", "second") as (a, b), connect(b, sub="u") as u:
        old = (await u.subscribe("doc"))["rooms"]["doc"]["epoch"]
        await a.publish("doc", {"n": 0})
        assert (await u.recv_type("message"))["data"] == {"n": 0}
        slow_to_reconnect(b, 4.0)  # back 2 to 4 s after each failed attempt
        await restart_redis(redis, a, b)
        await wait_until(lambda: a.ready, timeout=BACK)
        offsets = [await a.publish("doc", {"n": n}) for n in range(1, 6)]
        assert offsets == [1, 2, 3, 4, 5]  # a new stream
        assert not b.ready, "the second node came back too early for this test"
        await wait_until(lambda: b.ready, timeout=BACK)
        reset = await u.recv()
        assert reset["type"] == "reset" and reset["room"] == "doc", reset
        assert reset["offset"] == 0 and "missed" not in reset
        assert reset["epoch"] != old
        got = [await u.recv_type("message") for _ in range(5)]
        assert [(m["offset"], m["data"]["n"]) for m in got] == [(n, n) for n in range(1, 6)]
        await a.publish("doc", {"n": 6})
        assert (await u.recv_type("message"))["offset"] == 6
        await nothing_more(u, "doc")
        assert counters(b) == (1, 0)


async def test_a_stream_created_after_both_nodes_are_back_starts_with_a_reset(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2") as (a, b), \
            connect(a, sub="x") as on_a, connect(b, sub="y") as on_b:
        for client in (on_a, on_b):
            await client.subscribe("feed")
        await a.publish("feed", {"n": 0})
        for client in (on_a, on_b):
            assert (await client.recv_type("message"))["offset"] == 1
        await restart_redis(redis, a, b)
        await wait_until(lambda: a.ready and b.ready, timeout=BACK)
        assert await b.publish("feed", {"n": 1}) == 1  # the room's keys were gone: new stream
        for client in (on_a, on_b):
            reset = await client.recv()
            assert reset["type"] == "reset" and reset["offset"] == 0, reset
            message = await client.recv()
            assert message["type"] == "message" and message["data"] == {"n": 1}, message
            await nothing_more(client, "feed")


async def test_a_new_subscriber_after_the_restart_does_not_get_the_reset_its_reply_covers(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2") as (a, b), connect(b, sub="old") as old:
        await old.subscribe("room")
        await a.publish("room", {"n": 0})
        await old.recv_type("message")
        slow_to_reconnect(b, 4.0)
        await restart_redis(redis, a, b)
        await wait_until(lambda: a.ready, timeout=BACK)
        await a.publish("room", {"n": 1})
        await wait_until(lambda: b.ready, timeout=BACK)
        async with connect(b, sub="new") as new:
            entry = (await new.subscribe("room"))["rooms"]["room"]
            assert entry["offset"] == 1
            await a.publish("room", {"n": 2})
            assert (await new.recv())["offset"] == 2
            reset = await old.recv()
            assert reset["type"] == "reset" and reset["epoch"] == entry["epoch"], reset
            assert [(await old.recv())["offset"] for _ in range(2)] == [1, 2]
            await nothing_more(new, "room")
            await nothing_more(old, "room")


async def test_a_gap_history_no_longer_holds_is_announced_with_missed(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2", history_size=2) as (a, b), connect(a, sub="u") as u:
        epoch = (await u.subscribe("feed"))["rooms"]["feed"]["epoch"]
        await b.publish("feed", {"n": 1})
        assert (await u.recv_type("message"))["offset"] == 1
        slow_to_reconnect(a, 2.0)  # a wide, sure window
        listing = redis.command("CLIENT", "LIST").decode()
        ids = [part.split("=")[1] for line in listing.splitlines() if "name=roomcast-sub:n1#"
               in line for part in line.split() if part.startswith("id=")]
        assert len(ids) == 1, listing
        assert redis.command("CLIENT", "KILL", "ID", ids[0]).startswith(b":1")
        for n in range(2, 7):  # Redis keeps only 5 and 6 of these
            await b.publish("feed", {"n": n})
        reset = await u.recv()
        assert reset == {"type": "reset", "room": "feed", "epoch": epoch, "offset": 4,
                         "missed": {"from": 2, "to": 4}}, reset
        assert [(await u.recv_type("message"))["offset"] for _ in range(2)] == [5, 6]
        await b.publish("feed", {"n": 7})
        assert (await u.recv_type("message"))["offset"] == 7
        await nothing_more(u, "feed")
        assert counters(a) == (1, 3)
        stats = await a.backplane.stats()
        assert stats["resets"] == 1 and stats["lost"] == 3
        # /metrics: one reset announced, three messages one subscriber was told it will miss
        assert (a.metrics.resets, a.metrics.undeliverable) == (1, 3)
        text = render(registry_for(a)).decode()
        assert "roomcast_resets_total 1.0" in text and "roomcast_undeliverable_total 3.0" in text
