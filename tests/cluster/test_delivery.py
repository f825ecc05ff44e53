"""Many nodes as one (protocol §9): every message reaches subscribers on every node exactly
once, in order, with offsets assigned atomically per room in Redis."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.cluster.conftest import RedisServer, cluster, wait_until
from tests.support import WAIT, Client, connect


async def collect(client: Client, room: str, count: int, timeout: float = WAIT * 2) -> list[Any]:
    """The next `count` message frames of `room` (other frames skipped)."""
    out = []
    with trio.fail_after(timeout):
        while len(out) < count:
            frame = await client.recv(timeout)
            if frame.get("type") == "message" and frame["room"] == room:
                out.append(frame)
    return out


async def test_every_subscriber_on_every_node_gets_each_message_exactly_once(
    redis: RedisServer,
) -> None:
    per_publisher = 20
    async with cluster(redis, "n1", "n2", "n3") as nodes, \
            connect(nodes[0], sub="s1") as s1, connect(nodes[1], sub="s2") as s2, \
            connect(nodes[2], sub="s3") as s3, connect(nodes[2], sub="s4") as s4, \
            connect(nodes[0], sub="p1") as p1, connect(nodes[1], sub="p2") as p2, \
            connect(nodes[2], sub="p3") as p3:
        subscribers = [s1, s2, s3, s4]
        for s in subscribers:
            assert (await s.subscribe("chat"))["rooms"]["chat"]["ok"]
        total = 3 * per_publisher
        received: dict[int, list[Any]] = {}

        async def read(i: int, client: Client) -> None:
            received[i] = await collect(client, "chat", total)

        async def publish(name: str, client: Client) -> None:
            for n in range(per_publisher):
                await client.send({"type": "publish", "id": f"{name}-{n}", "room": "chat",
                                   "data": {"from": name, "n": n}})

        async with trio.open_nursery() as nursery:
            for i, s in enumerate(subscribers):
                nursery.start_soon(read, i, s)
            for name, p in (("p1", p1), ("p2", p2), ("p3", p3)):
                nursery.start_soon(publish, name, p)
        expected = {(f"p{k}", n) for k in (1, 2, 3) for n in range(per_publisher)}
        for frames in received.values():
            assert [f["offset"] for f in frames] == list(range(1, total + 1))
            assert {(f["data"]["from"], f["data"]["n"]) for f in frames} == expected
        # Nothing more arrives: no node delivered anything twice.
        for s in subscribers:
            with trio.move_on_after(0.3):
                frame = await s.recv_type("message", timeout=1)
                raise AssertionError(f"an extra message arrived: {frame}")


async def test_offsets_stay_contiguous_when_every_node_publishes_at_once(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2", "n3") as nodes:
        offsets: list[int] = []

        async def publish_from(node: Any, name: str) -> None:
            for n in range(40):
                offsets.append(await node.publish("counter", {"node": name, "n": n}))

        async with trio.open_nursery() as nursery:
            for i, node in enumerate(nodes):
                for worker in range(3):
                    nursery.start_soon(publish_from, node, f"{i}.{worker}")
        assert sorted(offsets) == list(range(1, 3 * 3 * 40 + 1))
        page = await nodes[1].backplane.history("counter", None, 1000)
        assert page.offset == 360


async def test_the_publisher_gets_its_own_message_once_through_the_backplane(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2") as (a, _b), connect(a, sub="me") as me:
        await me.subscribe("echo")
        await me.send({"type": "publish", "id": "p", "room": "echo", "data": {"x": 1}})
        # The reply and the message come in either order: the message's way through
        # Redis' pub/sub may be quicker than the script's reply.
        reply = message = None
        with trio.fail_after(WAIT):
            while reply is None or message is None:
                frame = await me.recv()
                if frame["type"] == "published":
                    reply = frame
                elif frame["type"] == "message":
                    message = frame
        assert message["offset"] == reply["offset"] == 1
        with trio.move_on_after(0.3):
            frame = await me.recv_type("message", timeout=1)
            raise AssertionError(f"delivered twice: {frame}")


async def test_event_filters_apply_to_messages_from_another_node(redis: RedisServer) -> None:
    async with cluster(redis, "n1", "n2") as (a, b), connect(a, sub="reader") as reader:
        await reader.subscribe("tasks", events=["task.done"], where={"team": "x"})
        await b.publish("tasks", {"team": "x", "n": 1}, event="task.created")
        await b.publish("tasks", {"team": "y", "n": 2}, event="task.done")
        await b.publish("tasks", {"team": "x", "n": 3}, event="task.done")
        await b.publish("tasks", {"team": "x", "n": 4}, event=None)
        frame = await reader.recv_type("message")
        assert (frame["data"]["n"], frame["event"], frame["offset"]) == (3, "task.done", 3)
        with trio.move_on_after(0.3):
            frame = await reader.recv_type("message", timeout=1)
            raise AssertionError(f"a filtered message arrived: {frame}")


async def test_an_event_name_with_spaces_and_newlines_survives_the_trip(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2") as (a, b), connect(a, sub="reader") as reader:
        name = "odd event\nname \u00e9"
        await reader.subscribe("odd", events=[name])
        await b.publish("odd", {"n": 1}, event=name)
        frame = await reader.recv_type("message")
        assert frame["event"] == name


async def test_an_idempotency_key_is_honoured_across_nodes(redis: RedisServer) -> None:
    async with cluster(redis, "n1", "n2") as (a, b), connect(a, sub="p") as pa, \
            connect(b, sub="p") as pb:
        first = await pa.publish("orders", {"n": 1}, idempotency_key="k-1")
        again = await pb.publish("orders", {"n": 1}, idempotency_key="k-1")
        other = await pb.publish("orders", {"n": 2}, idempotency_key="k-2")
        assert first["offset"] == again["offset"] == 1
        assert again.get("duplicate") is True and "duplicate" not in first
        assert other["offset"] == 2
        empty = [await pa.publish("orders", {"n": 3}, idempotency_key=""),
                 await pb.publish("orders", {"n": 3}, idempotency_key="")]
        assert [r["offset"] for r in empty] == [3, 3] and empty[1]["duplicate"] is True


async def test_an_idempotency_key_is_forgotten_after_the_window(redis: RedisServer) -> None:
    async with cluster(redis, "n1", "n2", idempotency_window=0.5) as (a, b):
        for n in range(150):  # more expired keys than one publish prunes (100)
            assert await a.publish_result("once", {"n": n}, idempotency_key=f"k{n}") == (
                n + 1, False)
        assert await b.publish_result("once", {}, idempotency_key="k149") == (150, True)
        # Redis's clock decides: nothing to wait on but time. A publish in between keeps
        # the room's key set alive while k149 itself grows older than the window.
        await trio.sleep(0.3)
        assert await b.publish_result("once", {}, idempotency_key="other") == (151, False)
        await trio.sleep(0.3)
        assert await b.publish_result("once", {}, idempotency_key="k149") == (152, False)


@pytest.mark.single_redis
async def test_a_node_subscribes_in_redis_only_to_rooms_it_has_subscribers_in(
    redis: RedisServer,
) -> None:
    def channels() -> set[str]:
        reply = redis.command("PUBSUB", "SHARDCHANNELS", "rc:*:c").decode()
        return {line for line in reply.split("\r\n") if line.startswith("rc:{")}

    async with cluster(redis, "n1") as (a,), connect(a, sub="u1") as u1, \
            connect(a, sub="u2") as u2:
        assert channels() == set()
        await u1.subscribe("alpha")
        await u2.subscribe("alpha", "beta")
        assert channels() == {"rc:{alpha}:c", "rc:{beta}:c"}
        await u1.call({"type": "unsubscribe", "id": 1, "rooms": ["alpha"]})
        assert "rc:{alpha}:c" in channels()  # u2 is still there
        await u2.call({"type": "unsubscribe", "id": 2, "rooms": ["alpha", "beta"]})
        await wait_until(lambda: channels() == set())
