"""Revocations and disconnects reach every node (protocol §8 /api/revoke and
/api/disconnect, §9)."""

from __future__ import annotations

import time

import trio

from tests.cluster.conftest import RedisServer, cluster, wait_until
from tests.support import WAIT, connect, http_request, make_token, running_server


async def test_a_revocation_on_one_node_closes_the_token_on_every_node(
    redis: RedisServer,
) -> None:
    revoked = make_token("eve", rooms=["*"], jti="jti-1")
    kept = make_token("eve", rooms=["*"], jti="jti-2")
    async with cluster(redis, "n1", "n2") as (a, b), connect(b, revoked) as bad_b, \
            connect(a, revoked) as bad_a, connect(b, kept) as good:
        await a.revoke("jti-1", time.time() + 600)
        assert await bad_b.closed() == (4401, "token revoked")
        assert await bad_a.closed() == (4401, "token revoked")
        assert (await good.call({"type": "ping", "id": 1}))["type"] == "pong"


async def test_a_node_started_after_a_revocation_refuses_the_token(
    redis: RedisServer,
) -> None:
    revoked = make_token("eve", rooms=["*"], jti="jti-late")
    async with cluster(redis, "n1") as (a,):
        await a.revoke("jti-late", time.time() + 600)
        async with running_server(backplane=redis.url, node="n2") as b:
            await wait_until(lambda: b.ready)
            async with connect(b, revoked, expect_connected=False) as client:
                assert (await client.closed())[0] == 4401


async def test_disconnect_closes_the_users_connections_on_every_node(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2", http=True, api_key="key") as (a, b), \
            connect(b, sub="zed") as zed_b, connect(a, sub="zed") as zed_a, \
            connect(b, sub="other") as other:
        answer = await http_request(a, "POST", "/api/disconnect", api_key="key",
                                    body={"user_id": "zed", "reason": "account closed"})
        assert answer.status == 200, answer
        assert await zed_b.closed() == (1000, "account closed")
        assert await zed_a.closed() == (1000, "account closed")
        assert (await other.call({"type": "ping", "id": 1}))["type"] == "pong"


async def test_cluster_stats_count_the_live_nodes_and_their_connections(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2", "n3", http=True, api_key="key",
                       presence_ttl=1.5) as (a, b, _c), connect(b, sub="x"), \
            connect(b, sub="y"):
        with trio.fail_after(WAIT):
            while True:  # heartbeats carry each node's counts (every 0.5 s here)
                answer = (await http_request(a, "GET", "/api/stats", api_key="key")).json()
                if answer["cluster"]["connections"] == 2:
                    break
                await trio.sleep(0.05)
        assert answer["node"] == "n1"
        assert answer["cluster"]["nodes"] == 3
        assert answer["cluster"]["node_names"] == ["n1", "n2", "n3"]


async def test_a_server_side_subscribe_on_one_node_reaches_the_users_connections_on_every_node(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2") as (a, b), connect(b, sub="gus", rooms=[]) as there, \
            connect(a, sub="gus", rooms=[]) as here:
        assert await a.subscribe_user("gus", "project:9") == {"subscribed": 1}  # a's count
        for client in (here, there):
            frame = await client.recv_type("subscribed")
            assert frame["server"] is True and frame["rooms"]["project:9"]["ok"] is True
        await b.publish("project:9", {"n": 1})
        for client in (here, there):
            assert (await client.recv_type("message"))["data"] == {"n": 1}
        assert await b.unsubscribe_user("gus", "project:9") == {"unsubscribed": 1}
        for client in (here, there):
            assert (await client.recv_type("unsubscribed"))["server"] is True
