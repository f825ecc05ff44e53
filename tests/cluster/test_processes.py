"""Real `python -m roomcast serve` processes on one Redis (protocol §9): a node killed with
SIGKILL loses its clients, who resume on another node with `since`, and its users leave
presence once its heartbeat runs out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio_websocket

from tests.cluster.conftest import RedisServer, cluster, node_process
from tests.support import WAIT, Client, ServerProcess, make_token


@asynccontextmanager
async def connect_url(url: str) -> AsyncIterator[Client]:
    async with trio_websocket.open_websocket_url(
        url, connect_timeout=WAIT, disconnect_timeout=WAIT,
    ) as ws:
        client = Client(ws)
        client.connected = await client.recv()
        assert client.connected["type"] == "connected", client.connected
        yield client


async def publish(server: ServerProcess, room: str, n: int) -> int:
    return await trio.to_thread.run_sync(server.publish, room, {"n": n})


async def test_clients_of_a_killed_node_resume_on_another_node_with_since(
    redis: RedisServer,
) -> None:
    token = make_token("walt", rooms=["*"], publish=["*"])
    async with node_process(redis, "p1") as p1, node_process(redis, "p2") as p2:
        async with connect_url(p1.ws_url(token)) as client:
            assert client.connected["node"] == "p1"
            reply = await client.subscribe("doc")
            epoch = reply["rooms"]["doc"]["epoch"]
            assert await publish(p2, "doc", 1) == 1
            last = (await client.recv_type("message"))["offset"]
            await trio.to_thread.run_sync(p1.kill)
            code, _reason = await client.closed()
            assert code == 1006  # no close frame: the process died
        assert [await publish(p2, "doc", n) for n in (2, 3)] == [2, 3]
        async with connect_url(p2.ws_url(token)) as again:
            assert again.connected["node"] == "p2"
            reply = await again.subscribe("doc", since={"doc": {"offset": last, "epoch": epoch}})
            assert reply["rooms"]["doc"] == {"ok": True, "offset": 3, "epoch": epoch,
                                             "recovered": True}
            assert [(await again.recv_type("message"))["data"]["n"] for _ in range(2)] == [2, 3]


async def test_a_killed_nodes_users_leave_presence_after_presence_ttl(
    redis: RedisServer,
) -> None:
    ttl = 2.0
    async with cluster(redis, "watching", presence_ttl=ttl) as (a,), \
            node_process(redis, "doomed", "--presence-ttl", str(ttl)) as doomed:
        watcher_token = make_token("watcher", rooms=["*"])
        async with connect_url(f"ws://127.0.0.1:{a.ws_port}/ws?token={watcher_token}") as w, \
                connect_url(doomed.ws_url(make_token("ghost", rooms=["*"]))) as ghost:
            await w.subscribe("hall", presence=True)
            await ghost.subscribe("hall")
            seen = await w.recv_type("joined")
            if seen["user_id"] == "watcher":
                seen = await w.recv_type("joined")
            assert seen["user_id"] == "ghost"
            users = await w.call({"type": "presence", "id": 1, "room": "hall"})
            assert {u["user_id"] for u in users["users"]} == {"watcher", "ghost"}
            killed_at = trio.current_time()
            await trio.to_thread.run_sync(doomed.kill)
            with trio.fail_after(ttl + WAIT):
                left = await w.recv_type("left")
                while left["user_id"] != "ghost":
                    left = await w.recv_type("left")
            assert left == {"type": "left", "room": "hall", "user_id": "ghost"}
            assert trio.current_time() - killed_at >= ttl * 0.5  # it waited for the ttl
            users = await w.call({"type": "presence", "id": 2, "room": "hall"})
            assert [u["user_id"] for u in users["users"]] == ["watcher"]
