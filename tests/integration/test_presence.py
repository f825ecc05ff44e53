"""Presence over real sockets (protocol §4 `presence`, §5 `joined`/`left`)."""

from __future__ import annotations

from typing import Any

import trio

from tests.support import WAIT, Client, connect, make_token, running_server


def token(sub: str, **claims: Any) -> str:
    return make_token(sub, rooms=["*"], publish=["*"], **claims)


async def next_presence_event(client: Client) -> dict[str, Any]:
    """The next frame, which must be a joined or left event."""
    frame = await client.recv()
    assert frame["type"] in ("joined", "left"), frame
    return frame


async def presence_users(client: Client, room: str) -> list[dict[str, Any]]:
    reply = await client.call({"type": "presence", "id": "who", "room": room})
    assert reply["type"] == "presence", reply
    users: list[dict[str, Any]] = sorted(reply["users"], key=lambda u: u["user_id"])
    return users


async def test_joined_is_sent_only_on_a_users_first_connection_in_the_room() -> None:
    async with running_server() as router, connect(router, sub="watcher") as watcher, \
            connect(router, token("bob", info={"name": "Bob"})) as bob1, \
            connect(router, token("bob", info={"name": "Bob"})) as bob2, \
            connect(router, sub="carol") as carol:
        await watcher.subscribe("project:12", presence=True)
        assert (await next_presence_event(watcher))["user_id"] == "watcher"
        await bob1.subscribe("project:12")
        assert await next_presence_event(watcher) == {
            "type": "joined", "room": "project:12", "user_id": "bob", "info": {"name": "Bob"}
        }
        await bob2.subscribe("project:12")
        await carol.subscribe("project:12")
        # bob's second connection made no event: the next one is carol's
        assert (await next_presence_event(watcher))["user_id"] == "carol"


async def test_left_is_sent_only_when_a_users_last_connection_leaves() -> None:
    async with running_server() as router, connect(router, sub="watcher") as watcher, \
            connect(router, sub="bob") as bob1, connect(router, sub="bob") as bob2, \
            connect(router, sub="carol") as carol:
        await bob1.subscribe("project:12")
        await bob2.subscribe("project:12")
        await carol.subscribe("project:12")
        await watcher.subscribe("project:12", presence=True)
        await watcher.recv_type("joined")  # its own arrival
        await bob1.call({"type": "unsubscribe", "id": 1, "rooms": ["project:12"]})
        await carol.call({"type": "unsubscribe", "id": 2, "rooms": ["project:12"]})
        assert await next_presence_event(watcher) == {
            "type": "left", "room": "project:12", "user_id": "carol"
        }
        await bob2.call({"type": "unsubscribe", "id": 3, "rooms": ["project:12"]})
        assert await next_presence_event(watcher) == {
            "type": "left", "room": "project:12", "user_id": "bob"
        }


async def test_presence_events_go_only_to_subscriptions_made_with_presence_true() -> None:
    async with running_server() as router, connect(router, sub="quiet") as quiet, \
            connect(router, sub="bob") as bob:
        await quiet.subscribe("project:12")
        await bob.subscribe("project:12")
        await bob.call({"type": "unsubscribe", "id": 1, "rooms": ["project:12"]})
        await router.publish("project:12", "marker")
        frame = await quiet.recv()
        assert frame["type"] == "message" and frame["data"] == "marker"


async def test_presence_true_in_one_room_does_not_report_another_room() -> None:
    async with running_server() as router, connect(router, sub="watcher") as watcher, \
            connect(router, sub="bob") as bob:
        await watcher.subscribe("project:12", presence=True)
        await watcher.recv_type("joined")
        await watcher.subscribe("project:99")
        await bob.subscribe("project:99")
        await bob.subscribe("project:12")
        event = await next_presence_event(watcher)
        assert event["room"] == "project:12" and event["user_id"] == "bob"


async def test_presence_lists_users_with_connection_counts_and_info() -> None:
    async with running_server() as router, \
            connect(router, token("alice", info={"name": "Alice", "avatar": "a.png"})) as a1, \
            connect(router, token("alice", info={"name": "Alice", "avatar": "a.png"})) as a2, \
            connect(router, sub="bob") as bob:
        for client in (a1, a2, bob):
            await client.subscribe("project:12")
        reply = await bob.call({"type": "presence", "id": 5, "room": "project:12"})
        assert set(reply) == {"type", "id", "room", "users"}
        assert reply["id"] == 5 and reply["room"] == "project:12"
        assert sorted(reply["users"], key=lambda u: u["user_id"]) == [
            {"user_id": "alice", "connections": 2, "info": {"name": "Alice", "avatar": "a.png"}},
            {"user_id": "bob", "connections": 1, "info": {}},
        ]


async def test_presence_needs_subscribe_permission_but_not_a_subscription() -> None:
    async with running_server() as router, connect(router, sub="bob") as bob, \
            connect(router, rooms=["project:*"]) as alice:
        await bob.subscribe("project:12")
        await bob.subscribe("secret:1")
        assert [u["user_id"] for u in await presence_users(alice, "project:12")] == ["bob"]
        refused = await alice.call({"type": "presence", "id": 9, "room": "secret:1"})
        assert refused["type"] == "error" and refused["code"] == "forbidden"
        assert refused["id"] == 9


async def test_presence_of_an_empty_room_lists_nobody() -> None:
    async with running_server() as router, connect(router) as alice:
        assert await presence_users(alice, "project:empty") == []


async def test_subscribing_twice_on_one_connection_counts_once() -> None:
    async with running_server() as router, connect(router) as alice:
        await alice.subscribe("project:12")
        await alice.subscribe("project:12", events=["task.created"])
        assert await presence_users(alice, "project:12") == [
            {"user_id": "alice", "connections": 1, "info": {}}
        ]


async def test_a_closed_connection_leaves_presence() -> None:
    async with running_server() as router, connect(router, sub="watcher") as watcher:
        await watcher.subscribe("project:12", presence=True)
        await watcher.recv_type("joined")
        async with connect(router, sub="bob") as bob:
            await bob.subscribe("project:12")
            assert (await next_presence_event(watcher))["type"] == "joined"
        assert await next_presence_event(watcher) == {
            "type": "left", "room": "project:12", "user_id": "bob"
        }
        assert [u["user_id"] for u in await presence_users(watcher, "project:12")] == ["watcher"]


async def test_a_closed_connection_lowers_its_users_count() -> None:
    async with running_server() as router, connect(router, sub="bob") as bob:
        await bob.subscribe("project:12", presence=True)
        await bob.recv_type("joined")
        async with connect(router, sub="bob") as other:
            await other.subscribe("project:12")
            assert (await presence_users(bob, "project:12"))[0]["connections"] == 2
        with trio.fail_after(WAIT):  # the server forgets a closed connection on its own time
            while True:
                if len(router.conns) == 1:
                    break
                await trio.sleep(0.01)
        assert await presence_users(bob, "project:12") == [
            {"user_id": "bob", "connections": 1, "info": {}}
        ]
