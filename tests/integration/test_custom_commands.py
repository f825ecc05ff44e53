"""An embedding app's own command types over real sockets (`@router.command(name)`)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from roomcast import Settings
from roomcast.auth import Principal
from roomcast.router import Router
from tests.support import SECRET, connect, make_token, running_server


async def test_a_custom_handler_gets_the_principal_and_payload_and_its_data_comes_back() -> None:
    calls: list[tuple[Principal, dict[str, Any]]] = []
    async with running_server() as router:

        @router.command("request_metrics")
        async def request_metrics(principal: Principal, payload: dict[str, Any]) -> Any:
            calls.append((principal, payload))
            return {"cpu": 0.25, "window": payload["window"]}

        token = make_token("alice", rooms=["project:*"], info={"name": "Alice"})
        async with connect(router, token) as alice:
            command = {"type": "request_metrics", "id": "m1", "window": 60}
            reply = await alice.call(command)
    assert reply == {"type": "request_metrics", "id": "m1", "data": {"cpu": 0.25, "window": 60}}
    [(principal, payload)] = calls
    assert principal.user_id == "alice" and principal.info == {"name": "Alice"}
    assert principal.rooms == ("project:*",)
    assert payload == command


async def test_a_custom_command_without_an_id_is_answered_with_a_null_id() -> None:
    async with running_server() as router:

        @router.command("whoami")
        async def whoami(principal: Principal, payload: dict[str, Any]) -> Any:
            return principal.user_id

        async with connect(router, sub="bob") as bob:
            await bob.send({"type": "whoami"})
            assert await bob.recv() == {"type": "whoami", "id": None, "data": "bob"}


async def test_unknown_types_still_get_unknown_type() -> None:
    async with running_server() as router:

        @router.command("request_metrics")
        async def request_metrics(principal: Principal, payload: dict[str, Any]) -> Any:
            return 1

        async with connect(router) as alice:
            reply = await alice.call({"type": "request_metric", "id": 4})
    assert reply["type"] == "error" and reply["code"] == "unknown_type" and reply["id"] == 4


async def test_a_handler_that_raises_gives_internal_and_the_connection_stays_up() -> None:
    async with running_server() as router:

        @router.command("explode")
        async def explode(principal: Principal, payload: dict[str, Any]) -> Any:
            if payload.get("really"):
                raise RuntimeError("boom")
            return "fine"

        async with connect(router) as alice:
            reply = await alice.call({"type": "explode", "id": 1, "really": True})
            assert reply["type"] == "error" and reply["code"] == "internal" and reply["id"] == 1
            assert "boom" not in reply["message"]  # internals stay in the log
            assert (await alice.call({"type": "ping", "id": 2}))["type"] == "pong"
            assert (await alice.call({"type": "explode", "id": 3}))["data"] == "fine"


async def test_a_handler_returning_non_json_gives_internal() -> None:
    async with running_server() as router:

        @router.command("opaque")
        async def opaque(principal: Principal, payload: dict[str, Any]) -> Any:
            return object()

        async with connect(router) as alice:
            reply = await alice.call({"type": "opaque", "id": 1})
            assert reply["type"] == "error" and reply["code"] == "internal"
            assert (await alice.call({"type": "ping", "id": 2}))["type"] == "pong"


async def test_a_slow_handler_holds_up_only_its_own_connection() -> None:
    release = trio.Event()
    async with running_server() as router:

        @router.command("slow")
        async def slow(principal: Principal, payload: dict[str, Any]) -> Any:
            await release.wait()
            return "done"

        async with connect(router) as alice, connect(router, sub="bob") as bob:
            await alice.send({"type": "slow", "id": 1})
            assert (await bob.call({"type": "ping", "id": 2}))["type"] == "pong"
            await bob.subscribe("project:12")
            await router.publish("project:12", "still flowing")
            assert (await bob.recv_type("message"))["data"] == "still flowing"
            release.set()
            assert await alice.recv() == {"type": "slow", "id": 1, "data": "done"}


async def test_custom_commands_count_against_the_rate_limit() -> None:
    async with running_server(rate_per_second=0.1, rate_burst=2) as router:

        @router.command("tick")
        async def tick(principal: Principal, payload: dict[str, Any]) -> Any:
            return True

        async with connect(router) as alice:
            replies = [await alice.call({"type": "tick", "id": i}) for i in range(3)]
    assert [r["type"] for r in replies] == ["tick", "tick", "error"]
    assert replies[2]["code"] == "rate_limited"


def test_a_built_in_command_type_cannot_be_replaced() -> None:
    router = Router(Settings(jwt_secret=SECRET))
    with pytest.raises(ValueError, match="built-in"):
        router.command("publish")
