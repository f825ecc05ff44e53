"""Server-side subscriptions (contract §12): the application moves live connections in and
out of rooms, whatever their patterns say; the token's `subscribe` claim does the same at
connect; the connection is told with frames that have `"server": true` and no id."""

from __future__ import annotations

from typing import Any

import trio

from roomcast.router import Router
from tests.support import Client, connect, free_port, http_request, make_token, running_server

KEY = "server-side-api-key-0123456789"


def api_server(**overrides: Any) -> Any:
    return running_server(http_port=free_port(), api_key=KEY, **overrides)


async def api(router: Router, path: str, body: dict[str, Any]) -> Any:
    response = await http_request(router, "POST", path, body=body, api_key=KEY)
    assert response.status == 200, response.body
    return response.json()


async def server_frame(client: Client, kind: str) -> dict[str, Any]:
    frame = await client.recv_type(kind)
    assert frame.get("server") is True and "id" not in frame, frame
    return frame


async def test_api_subscribe_moves_every_live_connection_in_whatever_its_patterns() -> None:
    async with api_server() as router, connect(router, sub="alice", rooms=[]) as one, \
            connect(router, sub="alice", rooms=[]) as two:
        assert (await one.subscribe("project:12"))["rooms"]["project:12"] == {
            "ok": False, "error": "forbidden"}
        answer = await api(router, "/api/subscribe", {"user_id": "alice", "room": "project:12"})
        assert answer == {"subscribed": 2}
        for client in (one, two):
            frame = await server_frame(client, "subscribed")
            entry = frame["rooms"]["project:12"]
            assert entry["ok"] is True and entry["recovered"] is False
            assert isinstance(entry["epoch"], str) and entry["offset"] == 0
        await router.publish("project:12", {"task_id": 7}, event="task.created")
        for client in (one, two):
            assert (await client.recv_type("message"))["data"] == {"task_id": 7}


async def test_a_server_subscribed_room_may_be_subscribed_again_with_since() -> None:
    async with api_server() as router:
        async with connect(router, sub="bob", rooms=[]) as bob:
            await api(router, "/api/subscribe", {"user_id": "bob", "room": "feed"})
            epoch = (await server_frame(bob, "subscribed"))["rooms"]["feed"]["epoch"]
            await router.publish("feed", 1)
            await router.publish("feed", 2)
            assert [(await bob.recv_type("message"))["offset"] for _ in range(2)] == [1, 2]
            again = await bob.subscribe("feed", since={"feed": {"offset": 1, "epoch": epoch}})
            assert again["rooms"]["feed"]["recovered"] is True
            assert (await bob.recv_type("message"))["offset"] == 2
        # a reconnect (a new connection of the same user) may resume it too
        async with connect(router, sub="bob", rooms=[]) as back:
            resumed = await back.subscribe("feed",
                                           since={"feed": {"offset": 2, "epoch": epoch}})
            assert resumed["rooms"]["feed"]["ok"] is True


async def test_api_unsubscribe_takes_it_out_and_forgets_the_permission() -> None:
    async with api_server() as router, connect(router, sub="carol", rooms=[]) as carol:
        await api(router, "/api/subscribe", {"user_id": "carol", "room": "team:1"})
        await server_frame(carol, "subscribed")
        answer = await api(router, "/api/unsubscribe", {"user_id": "carol", "room": "team:1"})
        assert answer == {"unsubscribed": 1}
        frame = await server_frame(carol, "unsubscribed")
        assert frame["rooms"] == ["team:1"]
        await router.publish("team:1", "after")
        assert (await carol.call({"type": "ping", "id": 1}))["type"] == "pong"  # nothing else
        assert (await carol.subscribe("team:1"))["rooms"]["team:1"]["error"] == "forbidden"


async def test_connection_id_moves_only_that_connection() -> None:
    async with api_server() as router, connect(router, sub="dave", rooms=[]) as one, \
            connect(router, sub="dave", rooms=[]) as two:
        answer = await api(router, "/api/subscribe", {
            "user_id": "dave", "room": "r", "connection_id": two.connected["connection_id"]})
        assert answer == {"subscribed": 1}
        await server_frame(two, "subscribed")
        await router.publish("r", "x")
        assert (await two.recv_type("message"))["data"] == "x"
        assert (await one.call({"type": "ping", "id": 2}))["type"] == "pong"  # got nothing


async def test_the_token_claim_subscribe_subscribes_right_after_connected() -> None:
    token = make_token("erin", rooms=[], subscribe=["user:{sub}", "news"])
    async with api_server() as router, connect(router, token) as erin:
        frame = await server_frame(erin, "subscribed")
        assert set(frame["rooms"]) == {"user:erin", "news"}
        assert all(entry["ok"] for entry in frame["rooms"].values())
        await router.publish("news", "headline")
        assert (await erin.recv_type("message"))["data"] == "headline"


async def test_max_subscriptions_applies_to_server_side_subscriptions() -> None:
    async with api_server(max_subscriptions=1) as router, \
            connect(router, sub="fay", rooms=["*"]) as fay:
        await fay.subscribe("mine")
        await api(router, "/api/subscribe", {"user_id": "fay", "room": "theirs"})
        entry = (await server_frame(fay, "subscribed"))["rooms"]["theirs"]
        assert entry == {"ok": False, "error": "too_many_subscriptions"}


async def test_a_bad_room_is_a_400_and_an_unknown_user_counts_zero() -> None:
    async with api_server() as router:
        response = await http_request(router, "POST", "/api/subscribe",
                                      body={"user_id": "x", "room": "no spaces"}, api_key=KEY)
        assert response.status == 400
        with trio.fail_after(5):
            assert await api(router, "/api/subscribe", {"user_id": "nobody", "room": "r"}) == {
                "subscribed": 0}
