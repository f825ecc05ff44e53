"""What nodes and clients see when Redis fails (protocol §8 /readyz, §9): never a made-up
offset, readiness that follows Redis, and delivery that comes back by itself."""

from __future__ import annotations

import json

import pytest
import trio

from roomcast.backplane import BackplaneUnavailable
from tests.cluster.conftest import RedisServer, cluster, wait_until
from tests.support import connect, http_request

BACK = 15.0  # seconds a node may take to notice Redis is back (backoff is at most 2 s)

pytestmark = pytest.mark.single_redis  # kills and restarts its one redis-server


async def test_with_redis_down_nodes_are_unready_and_publishes_fail_as_unavailable(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2", http=True) as (a, b), connect(a, sub="u") as u:
        assert (await http_request(a, "GET", "/readyz")).status == 200
        await u.subscribe("live")
        redis.kill()
        await wait_until(lambda: not a.ready and not b.ready)
        assert (await http_request(a, "GET", "/readyz")).status == 503
        assert (await http_request(b, "GET", "/readyz")).status == 503
        reply = await u.publish("live", {"n": 1})
        assert reply["type"] == "error" and reply["code"] == "unavailable", reply
        assert "redis" in reply["message"] and "retry" in reply["message"]
        sub = await u.subscribe("other")
        assert sub["rooms"]["other"] == {"ok": False, "error": "unavailable"}
        history = await u.call({"type": "history", "id": 1, "room": "live"})
        assert history["type"] == "error" and history["code"] == "unavailable"
        try:
            await b.publish("live", {"n": 2})
        except BackplaneUnavailable as exc:
            assert "127.0.0.1" in str(exc)
        else:
            raise AssertionError("a server-side publish made up an offset with Redis down")


async def test_when_redis_returns_nodes_resubscribe_and_delivery_resumes(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2", http=True) as (a, b), connect(a, sub="u") as u:
        await u.subscribe("live")
        await b.publish("live", {"n": 1})
        assert (await u.recv_type("message"))["data"] == {"n": 1}
        redis.kill()
        await wait_until(lambda: not a.ready and not b.ready)
        redis.start()
        await wait_until(lambda: a.ready and b.ready, timeout=BACK)
        assert (await http_request(a, "GET", "/readyz")).status == 200
        # The client did nothing: its node subscribed again by itself.
        await b.publish("live", {"n": 2})
        frame = await u.recv_type("message")
        assert frame["data"] == {"n": 2}
        assert frame["offset"] == 1  # Redis came back empty: a new stream


async def test_redis_restarted_empty_gives_new_epochs_and_recovered_false(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2") as (a, b):
        async with connect(a, sub="c") as first:
            old = (await first.subscribe("doc"))["rooms"]["doc"]["epoch"]
            for n in range(3):
                await a.publish("doc", {"n": n})
        redis.kill()
        await wait_until(lambda: not a.ready and not b.ready)
        redis.start()  # empty: no persistence
        await wait_until(lambda: a.ready and b.ready, timeout=BACK)
        async with connect(b, sub="c") as again:
            reply = await again.subscribe("doc", since={"doc": {"offset": 3, "epoch": old}})
            entry = reply["rooms"]["doc"]
            assert entry["ok"] is True and entry["recovered"] is False
            assert entry["epoch"] != old and entry["offset"] == 0
            assert "missed" not in entry


async def test_messages_published_while_a_nodes_pubsub_link_was_down_are_filled_in(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2") as (a, b), connect(a, sub="u") as u:
        await u.subscribe("feed")
        await b.publish("feed", {"n": 1})
        assert (await u.recv_type("message"))["offset"] == 1
        a.backplane.min_backoff = a.backplane.max_backoff = 1.0  # a wide, sure window
        listing = redis.command("CLIENT", "LIST").decode()
        ids = [part.split("=")[1] for line in listing.splitlines() if "name=roomcast-sub:n1#"
               in line for part in line.split() if part.startswith("id=")]
        assert len(ids) == 1, listing
        assert redis.command("CLIENT", "KILL", "ID", ids[0]).startswith(b":1")
        for n in (2, 3, 4):  # Redis is up: these succeed, but node n1 hears none of them
            await b.publish("feed", {"n": n})
        got = [await u.recv_type("message") for _ in range(3)]
        assert [(m["offset"], m["data"]["n"]) for m in got] == [(2, 2), (3, 3), (4, 4)]
        assert a.backplane.filled == 3
        await b.publish("feed", {"n": 5})
        assert (await u.recv_type("message"))["offset"] == 5
        with trio.move_on_after(0.3):
            frame = await u.recv_type("message", timeout=1)
            raise AssertionError(f"delivered twice: {frame}")


async def test_a_node_started_while_redis_is_down_becomes_ready_when_it_comes_up(
    redis: RedisServer,
) -> None:
    redis.kill()
    async with cluster(redis, "n1", http=True, wait_ready=False) as (a,):
        assert not a.ready
        assert (await http_request(a, "GET", "/readyz")).status == 503
        redis.start()
        await wait_until(lambda: a.ready, timeout=BACK)
        assert (await a.publish("x", {"n": 1})) == 1


async def test_a_redis_that_stops_answering_makes_nodes_unready_until_it_answers(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2") as (a, b), connect(a, sub="u") as u:
        await u.subscribe("live")
        for node in (a, b):
            node.backplane.command_timeout = 0.5
            node.backplane.keepalive_interval = 0.1
        redis.pause()
        try:
            reply = await u.publish("live", {"n": 1})
            assert reply["type"] == "error" and reply["code"] == "unavailable", reply
            await wait_until(lambda: not a.ready and not b.ready)
        finally:
            redis.resume()
        await wait_until(lambda: a.ready and b.ready, timeout=BACK)
        await b.publish("live", {"n": 2})
        # The first publish may or may not have run once Redis woke up (its error said
        # so); either way the subscriber gets exactly what history holds, in order.
        page = await b.backplane.history("live", None, 10)
        held = [json.loads(m) for m in page.messages]
        assert held[-1]["data"] == {"n": 2}
        got = [await u.recv_type("message") for _ in held]
        assert got == held
