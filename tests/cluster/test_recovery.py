"""History and recovery live in Redis (protocol §4 subscribe with `since`, §9): a client
resumes on any node."""

from __future__ import annotations

import trio

from tests.cluster.conftest import RedisServer, cluster
from tests.support import connect


async def test_a_client_resumes_with_since_on_another_node(redis: RedisServer) -> None:
    async with cluster(redis, "n1", "n2") as (a, b):
        async with connect(a, sub="bob") as first:
            reply = await first.subscribe("doc")
            epoch = reply["rooms"]["doc"]["epoch"]
            await a.publish("doc", {"n": 1})
            seen = await first.recv_type("message")
            assert seen["offset"] == 1
        for n in (2, 3, 4):
            await a.publish("doc", {"n": n})
        async with connect(b, sub="bob") as second:
            reply = await second.subscribe(
                "doc", since={"doc": {"offset": 1, "epoch": epoch}})
            assert reply["rooms"]["doc"] == {"ok": True, "offset": 4, "epoch": epoch,
                                             "recovered": True}
            replayed = [await second.recv_type("message") for _ in range(3)]
            assert [m["data"]["n"] for m in replayed] == [2, 3, 4]
            await b.publish("doc", {"n": 5})
            live = await second.recv_type("message")
            assert (live["offset"], live["data"]["n"]) == (5, 5)


async def test_history_published_on_one_node_is_read_on_another(redis: RedisServer) -> None:
    async with cluster(redis, "n1", "n2") as (a, b), connect(b, sub="reader") as reader:
        for n in range(1, 6):
            await a.publish("log", {"n": n}, event="line")
        newest = await reader.call({"type": "history", "id": 1, "room": "log", "limit": 2})
        assert [m["offset"] for m in newest["messages"]] == [4, 5]
        assert newest["offset"] == 5
        after = await reader.call({"type": "history", "id": 2, "room": "log", "since": 1,
                                   "limit": 3})
        assert [m["data"]["n"] for m in after["messages"]] == [2, 3, 4]
        assert all(m["event"] == "line" and m["room"] == "log" for m in after["messages"])


async def test_a_resume_past_trimmed_history_reports_the_missed_range(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2", history_size=3) as (a, b):
        epoch = (await a.backplane.position("feed")).epoch
        for n in range(1, 9):
            await a.publish("feed", {"n": n})
        async with connect(b, sub="late") as late:
            reply = await late.subscribe("feed", since={"feed": {"offset": 2, "epoch": epoch}})
            entry = reply["rooms"]["feed"]
            assert entry["recovered"] is False
            assert entry["missed"] == {"from": 3, "to": 5}
            held = [await late.recv_type("message") for _ in range(3)]
            assert [m["offset"] for m in held] == [6, 7, 8]


async def test_a_resume_with_another_epoch_is_not_recovered(redis: RedisServer) -> None:
    async with cluster(redis, "n1", "n2") as (a, b), connect(b, sub="c") as client:
        await a.publish("room", {"n": 1})
        reply = await client.subscribe("room", since={"room": {"offset": 1, "epoch": "e-old"}})
        entry = reply["rooms"]["room"]
        assert entry["recovered"] is False and entry["offset"] == 1
        assert "missed" not in entry


async def test_history_entries_older_than_history_ttl_are_gone(redis: RedisServer) -> None:
    async with cluster(redis, "n1", history_ttl=0.3) as (a,):
        await a.publish("brief", {"n": 1})
        assert len((await a.backplane.history("brief", None, 10)).messages) == 1
        await trio.sleep(0.5)  # Redis's clock decides: nothing to wait on but time
        page = await a.backplane.history("brief", None, 10)
        assert page.messages == [] and page.offset == 1
