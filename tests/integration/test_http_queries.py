"""GET /api/presence, /api/history and /api/stats agree with the WebSocket side (§8)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import connect, free_port, http_request, make_token, running_server

KEY = "test-api-key-0123456789"


def api_server(**overrides: Any) -> Any:
    return running_server(http_port=free_port(), api_key=KEY, **overrides)


async def get(router: Any, path: str) -> Any:
    return await http_request(router, "GET", path, api_key=KEY)


def by_user(users: list[dict[str, Any]]) -> dict[str, Any]:
    return {u["user_id"]: u for u in users}


async def test_presence_lists_the_users_in_a_room_as_the_websocket_side_does() -> None:
    info_token = make_token("bob", rooms=["*"], publish=["*"], info={"name": "Bob"})
    async with api_server() as router, connect(router, sub="alice") as a1, \
            connect(router, sub="alice") as a2, connect(router, info_token) as bob:
        for client in (a1, a2, bob):
            await client.subscribe("project:12")
        response = await get(router, "/api/presence?room=project:12")
        assert response.status == 200
        answer = response.json()
        assert answer["room"] == "project:12"
        users = by_user(answer["users"])
        assert users["alice"]["connections"] == 2
        assert users["bob"]["connections"] == 1
        assert users["bob"]["info"] == {"name": "Bob"}
        ws = await a1.call({"type": "presence", "id": 5, "room": "project:12"})
        assert by_user(ws["users"]) == users


async def test_presence_of_an_empty_room_is_an_empty_list() -> None:
    async with api_server() as router:
        response = await get(router, "/api/presence?room=project:nobody")
        assert response.json() == {"room": "project:nobody", "users": []}


async def test_history_matches_the_websocket_history_reply() -> None:
    async with api_server() as router, connect(router) as alice:
        for n in range(5):
            await alice.publish("project:12", {"n": n}, event="tick")
        response = await get(router, "/api/history?room=project:12&since=1&limit=2")
        assert response.status == 200
        answer = response.json()
        ws = await alice.call({"type": "history", "id": 6, "room": "project:12",
                               "since": 1, "limit": 2})
        del ws["id"]
        assert answer == ws
        assert answer["type"] == "history"
        assert answer["offset"] == 5
        assert [m["offset"] for m in answer["messages"]] == [2, 3]
        assert answer["messages"][0]["data"] == {"n": 1}
        assert answer["messages"][0]["sender"] == "alice"


async def test_history_without_since_returns_the_newest_messages_oldest_first() -> None:
    async with api_server() as router:
        for n in range(4):
            await http_request(router, "POST", "/api/publish", api_key=KEY,
                               body={"room": "project:12", "data": n})
        answer = (await get(router, "/api/history?room=project:12&limit=3")).json()
        assert [m["offset"] for m in answer["messages"]] == [2, 3, 4]
        assert [m["sender"] for m in answer["messages"]] == [None, None, None]


async def test_history_defaults_to_at_most_100_messages() -> None:
    async with api_server(history_size=150) as router:
        for n in range(120):
            await router.publish("project:12", n)
        answer = (await get(router, "/api/history?room=project:12")).json()
        assert len(answer["messages"]) == 100
        assert answer["messages"][-1]["offset"] == 120


@pytest.mark.parametrize("query", [
    pytest.param("", id="no-room"),
    pytest.param("?room=bad%20room", id="bad-room"),
    pytest.param("?room=project:1&limit=0", id="limit-0"),
    pytest.param("?room=project:1&limit=1001", id="limit-1001"),
    pytest.param("?room=project:1&limit=ten", id="limit-not-a-number"),
    pytest.param("?room=project:1&since=-1", id="since-negative"),
    pytest.param("?room=project:1&since=1.5", id="since-not-whole"),
])
async def test_a_bad_history_query_gets_400(query: str) -> None:
    async with api_server() as router:
        response = await get(router, f"/api/history{query}")
        assert response.status == 400, response
        assert response.json()["error"] == "bad_request"


@pytest.mark.parametrize("query", [
    pytest.param("", id="no-room"),
    pytest.param("?room=", id="empty-room"),
    pytest.param("?room=a%20b", id="bad-room"),
])
async def test_a_bad_presence_query_gets_400(query: str) -> None:
    async with api_server() as router:
        response = await get(router, f"/api/presence{query}")
        assert response.status == 400, response
        assert response.json()["error"] == "bad_request"


async def test_stats_count_connections_users_and_rooms() -> None:
    async with api_server(node="n-42") as router, connect(router, sub="alice") as a1, \
            connect(router, sub="alice") as a2, connect(router, sub="bob") as bob:
        await a1.subscribe("project:1")
        await a2.subscribe("project:1")
        await bob.subscribe("project:2")
        response = await get(router, "/api/stats")
        assert response.status == 200
        stats = response.json()
        assert (stats["connections"], stats["users"], stats["rooms"]) == (3, 2, 2)
        assert stats["node"] == "n-42"
        assert stats["ready"] is True
        assert stats["http_port"] == router.http_port
        assert stats["ws_port"] == router.ws_port
