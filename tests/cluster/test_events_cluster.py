"""Room and user events across nodes on one Redis (protocol §13): one event per
cluster-wide transition whichever node it happens on, no event for an absence shorter
than events_delay even when the return is on another node, and a node killed with
SIGKILL has its users and rooms gone once, after presence_ttl, told by another node."""

from __future__ import annotations

from typing import Any

import trio

from roomcast.router import Router
from tests.cluster.conftest import RedisServer, cluster, node_process
from tests.cluster.test_processes import connect_url
from tests.integration.test_events_live import Application, application, signed
from tests.support import WAIT, connect, make_token

DELAY = 1.0


def events_settings(app: Application, delay: float = DELAY) -> dict[str, Any]:
    return {"events_url": f"http://127.0.0.1:{app.port}/events",
            "hook_secret": "events-secret", "events_delay": delay}


async def present(node: Router, room: str, users: int) -> None:
    """Wait until Redis counts `users` users in `room` (presence is recorded after the
    (un)subscribe reply, so a test that needs the order of transitions waits for it)."""
    with trio.fail_after(WAIT):
        while len(await node.presence(room)) != users:  # noqa: ASYNC110 - no event for it
            await trio.sleep(0.01)


async def test_transitions_anywhere_make_one_event_each(redis: RedisServer) -> None:
    async with application() as app, \
            cluster(redis, "n1", "n2", **events_settings(app)) as (n1, n2):
        async with connect(n1, sub="alice") as alice1:
            online = await app.next()
            assert signed(online) and online.event["id"] == "user_online:alice:1"
            async with connect(n2, sub="alice"):
                pass  # alice was online all along: no event
            await alice1.subscribe("doc")
            assert (await app.next_of("doc"))["id"] == "room_occupied:doc:1"
            async with connect(n2, sub="bob") as bob:
                assert (await app.next_of("bob"))["id"] == "user_online:bob:1"
                await bob.subscribe("doc")  # already occupied: no event
                await present(n1, "doc", 2)  # else alice may leave before bob arrives
                await alice1.call({"type": "unsubscribe", "id": 1, "rooms": ["doc"]})
                await bob.call({"type": "unsubscribe", "id": 2, "rooms": ["doc"]})
                assert (await app.next_of("doc"))["id"] == "room_vacated:doc:2"
            assert (await app.next_of("bob"))["id"] == "user_offline:bob:2"
        assert (await app.next_of("alice"))["id"] == "user_offline:alice:2"


async def test_a_return_on_another_node_within_the_delay_is_no_news(
    redis: RedisServer,
) -> None:
    async with application() as app, \
            cluster(redis, "n1", "n2", **events_settings(app, delay=2.0)) as (n1, n2), \
            connect(n1, sub="carol") as carol, connect(n2, sub="dave") as dave:
        await carol.subscribe("hall")
        assert (await app.next_of("hall"))["id"] == "room_occupied:hall:1"
        await carol.call({"type": "unsubscribe", "id": 1, "rooms": ["hall"]})  # n1 holds 2
        await present(n1, "hall", 0)
        await dave.subscribe("hall")  # back within the delay, on n2: 3 is no news
        await present(n1, "hall", 1)
        await dave.call({"type": "unsubscribe", "id": 2, "rooms": ["hall"]})  # n2 holds 4
        assert (await app.next_of("hall"))["id"] == "room_vacated:hall:4"


async def test_a_killed_nodes_users_go_offline_once_after_presence_ttl(
    redis: RedisServer,
) -> None:
    ttl = 2.0
    async with application() as app:
        settings = events_settings(app)
        flags = ["--presence-ttl", str(ttl), "--events-delay", str(DELAY),
                 "--events-url", settings["events_url"], "--hook-secret",
                 settings["hook_secret"]]
        async with cluster(redis, "survivor", presence_ttl=ttl, **settings) as (survivor,), \
                node_process(redis, "doomed", *flags) as doomed:
            async with connect_url(doomed.ws_url(make_token("ghost", rooms=["*"]))) as ghost:
                assert (await app.next_of("ghost"))["id"] == "user_online:ghost:1"
                await ghost.subscribe("crypt")
                assert (await app.next_of("crypt"))["id"] == "room_occupied:crypt:1"
                killed_at = trio.current_time()
                await trio.to_thread.run_sync(doomed.kill)
            with trio.fail_after(ttl + DELAY + WAIT):  # the node's reaping, then the delay
                gone = {(await app.next(ttl + DELAY + WAIT)).event["id"] for _ in range(2)}
            assert gone == {"user_offline:ghost:2", "room_vacated:crypt:2"}
            assert trio.current_time() - killed_at >= ttl * 0.5  # it waited for the ttl
            # nothing more of ghost's: the next event is a newcomer's
            async with connect(survivor, sub="newcomer"):
                assert (await app.next()).event["id"] == "user_online:newcomer:1"


async def test_a_gone_held_by_a_node_that_dies_is_sent_once_by_another(
    redis: RedisServer,
) -> None:
    ttl, delay = 2.0, 2.0
    async with application() as app:
        settings = events_settings(app, delay=delay)
        flags = ["--presence-ttl", str(ttl), "--events-delay", str(delay),
                 "--events-url", settings["events_url"]]
        async with cluster(redis, "survivor", presence_ttl=ttl, **settings) as (survivor,), \
                node_process(redis, "doomed", *flags) as doomed:
            async with connect_url(doomed.ws_url(make_token("ghost", rooms=["*"]))):
                assert (await app.next_of("ghost"))["id"] == "user_online:ghost:1"
            # ghost has gone: doomed holds user_offline for `delay`, and dies meanwhile
            await trio.to_thread.run_sync(doomed.kill)
            # the sweep of another node, or its reaping of the dead one, then the delay
            got = await app.next(ttl + delay + WAIT)
            assert got.event["id"] == "user_offline:ghost:2"
            async with connect(survivor, sub="newcomer"):
                assert (await app.next()).event["id"] == "user_online:newcomer:1"
