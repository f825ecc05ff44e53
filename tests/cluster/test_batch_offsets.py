"""Publishes of one /api/batch to one room take consecutive offsets in batch order on a
Redis backplane too (§15), while another node publishes into the same room."""

from __future__ import annotations

import trio

from roomcast.router import Router
from tests.cluster.conftest import RedisServer, cluster
from tests.support import http_request

KEY = "batch-offsets-key-0123456789"


async def singles(node: Router) -> None:
    for n in range(300):
        await node.publish("shared", {"single": n})


async def test_a_batchs_publishes_to_one_room_take_consecutive_offsets_across_nodes(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1", "n2", http=True, api_key=KEY) as (a, b), \
            trio.open_nursery() as nursery:
        nursery.start_soon(singles, b)  # the other node publishes into the room meanwhile
        for round_ in range(5):
            commands = [{"method": "publish",
                         "params": {"room": "shared", "data": {"batch": round_, "n": n}}}
                        for n in range(10)]
            response = await http_request(a, "POST", "/api/batch",
                                          body={"commands": commands}, api_key=KEY)
            assert response.status == 200, response.body
            offsets = [reply["result"]["offset"] for reply in response.json()["replies"]]
            assert offsets == list(range(offsets[0], offsets[0] + 10)), offsets
