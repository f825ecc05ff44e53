"""RedisBackplane.publish_many against a real redis-server: a run of publishes to one room
takes consecutive offsets while another node publishes to the room at the same time, and
each answers (offset, duplicate, history, delivery) as one publish at a time would."""

from __future__ import annotations

import json
import time

import trio

from roomcast import open_router
from roomcast import protocol as p
from roomcast.backplane.redis import RedisBackplane
from tests.cluster.conftest import RedisServer
from tests.support import WAIT, server_settings


def template(room: str, n: int) -> p.MessageTemplate:
    return p.message_template(room, b'{"n":%d}' % n, None, None, time.time())


async def test_a_run_takes_consecutive_offsets_while_another_node_publishes(
        redis: RedisServer) -> None:
    room = "project:many"
    async with open_router(server_settings(backplane=redis.url, node="a")) as a, \
            open_router(server_settings(backplane=redis.url, node="b")) as b:
        many, other = a.backplane, b.backplane
        assert isinstance(many, RedisBackplane) and isinstance(other, RedisBackplane)
        runs: list[list[int]] = []
        singles: list[int] = []

        async def publish_singles() -> None:
            for n in range(200):
                singles.append((await other.publish(room, template(room, -n), None)).offset)

        async def publish_runs() -> None:
            for r in range(20):
                results = await many.publish_many(
                    room, [(template(room, r * 10 + i), "e", None) for i in range(10)])
                runs.append([result.offset for result in results])

        with trio.fail_after(WAIT * 4):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_singles)
                nursery.start_soon(publish_runs)
        for run in runs:
            assert run == list(range(run[0], run[0] + 10)), run
        assert sorted(singles + [o for run in runs for o in run]) == list(range(1, 401))


async def test_each_message_answers_as_a_single_publish_would(redis: RedisServer) -> None:
    room = "project:keys"
    settings = server_settings(backplane=redis.url, node="a", history_size=5)
    async with open_router(settings) as router:
        backplane = router.backplane
        assert isinstance(backplane, RedisBackplane)
        first = await backplane.publish(room, template(room, 0), None, "k0")
        results = await backplane.publish_many(room, [
            (template(room, 1), None, "k1"), (template(room, 2), "typed", "k0"),
            (template(room, 3), None, "k1"), (template(room, 4), None, None)])
        assert [(r.offset, r.duplicate) for r in results] == [
            (2, False), (first.offset, True), (2, True), (3, False)]
        assert {r.epoch for r in results} == {first.epoch}
        assert await backplane.publish_many(room, []) == []
        page = await backplane.history(room, None, 10)
        kept = [json.loads(m) for m in page.messages]
        assert [(m["offset"], m["data"]) for m in kept] == [(1, {"n": 0}), (2, {"n": 1}),
                                                             (3, {"n": 4})]
        assert (await backplane.publish(room, template(room, 5), None)).offset == 4
