"""The embedding API of open_router, seen by real WebSocket clients."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio

import roomcast
from roomcast.auth import Principal
from tests.support import SECRET, WAIT, Client, connect, running_server

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def nothing_arrives(client: Client, seconds: float = 0.2) -> None:
    """Assert that no frame at all reaches `client` for a short while."""
    with trio.move_on_after(seconds):
        frame = await client.ws.get_message()
        raise AssertionError(f"unexpected frame {frame!r}")


async def test_an_app_embeds_the_router_and_shuts_it_down() -> None:
    settings = roomcast.Settings(port=0, http_port=0, jwt_secret=SECRET, node="app",
                                 shutdown_grace=0.1)
    async with roomcast.open_router(settings) as router, trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        async with connect(router) as alice:
            await alice.subscribe("project:12")
            await router.publish("project:12", {"task_id": 7}, event="task.created")
            message = await alice.recv_type("message")
            router.shutdown()
            code, _ = await alice.closed()
    assert message["data"] == {"task_id": 7}
    assert code == 1001


# ------------------------------------------------------------------ publish and broadcast
async def test_router_publish_reaches_subscribers_with_a_null_sender() -> None:
    async with running_server() as router, connect(router) as alice:
        await alice.subscribe("project:12")
        first = await router.publish("project:12", {"task_id": 7}, event="task.created")
        second = await router.publish("project:12", [1, "two"])
        m1 = await alice.recv_type("message")
        m2 = await alice.recv_type("message")
    assert (first, second) == (1, 2)
    assert (m1["room"], m1["offset"], m1["event"], m1["data"], m1["sender"]) == (
        "project:12", 1, "task.created", {"task_id": 7}, None)
    assert (m2["offset"], m2["event"], m2["data"], m2["sender"]) == (2, None, [1, "two"], None)
    assert ISO_Z.fullmatch(m1["ts"])


async def test_router_publish_shares_offsets_with_client_publishes() -> None:
    async with running_server() as router, connect(router) as alice:
        assert (await alice.publish("room:1", "a"))["offset"] == 1
        assert await router.publish("room:1", "b") == 2
        assert (await alice.publish("room:1", "c"))["offset"] == 3


async def test_router_publish_refuses_a_bad_room_name() -> None:
    async with running_server() as router:
        with pytest.raises(ValueError, match="not a valid room name"):
            await router.publish("no spaces", 1)


async def test_broadcast_publishes_once_into_each_room() -> None:
    async with running_server() as router, connect(router) as alice, connect(
            router, sub="bob") as bob:
        await alice.subscribe("a:1", "b:1")
        await bob.subscribe("b:1")
        await router.publish("b:1", "earlier")
        await bob.recv_type("message")
        await alice.recv_type("message")
        offsets = await router.broadcast(["a:1", "b:1", "a:1"], {"all": True}, event="notice")
        alice_got = [await alice.recv_type("message") for _ in range(2)]
        bob_got = await bob.recv_type("message")
        await nothing_arrives(alice)
    assert offsets == {"a:1": 1, "b:1": 2}
    assert sorted((m["room"], m["offset"]) for m in alice_got) == [("a:1", 1), ("b:1", 2)]
    assert all(m["data"] == {"all": True} and m["event"] == "notice" for m in alice_got)
    assert (bob_got["room"], bob_got["offset"], bob_got["sender"]) == ("b:1", 2, None)


async def test_broadcast_refuses_a_bad_room_before_publishing_anything() -> None:
    async with running_server() as router:
        with pytest.raises(ValueError):
            await router.broadcast(["ok:1", "not ok"], 1)
        assert await router.publish("ok:1", 1) == 1


# ------------------------------------------------------------------ to a user, to a connection
async def test_send_to_user_publishes_into_the_personal_room() -> None:
    async with running_server() as router, connect(router, sub="alice") as alice, connect(
            router, sub="alice") as alice2, connect(router, sub="bob") as bob:
        for client in (alice, alice2):
            await client.subscribe("user:alice")
        await bob.subscribe("user:bob")
        offset = await router.send_to_user("alice", {"note": "hi"}, event="notice")
        got = [await c.recv_type("message") for c in (alice, alice2)]
        await nothing_arrives(bob)
    assert offset == 1
    for message in got:
        assert (message["room"], message["data"], message["event"], message["sender"]) == (
            "user:alice", {"note": "hi"}, "notice", None)


async def test_send_to_connection_sends_a_direct_frame_to_that_connection_only() -> None:
    async with running_server() as router, connect(router) as alice, connect(router) as alice2:
        sent = router.send_to_connection(alice.connected["connection_id"], {"k": 1},
                                         event="hello")
        frame = await alice.recv()
        await nothing_arrives(alice2)
    assert sent is True
    assert frame["type"] == "direct"
    assert (frame["event"], frame["data"]) == ("hello", {"k": 1})
    assert ISO_Z.fullmatch(frame["ts"])


async def test_send_to_connection_of_an_unknown_id_returns_false() -> None:
    async with running_server() as router:
        assert router.send_to_connection("no-such-connection", 1) is False


async def test_send_to_connection_needs_no_subscription_and_keeps_order() -> None:
    async with running_server() as router, connect(router) as alice:
        await alice.subscribe("room:1")
        conn_id = alice.connected["connection_id"]
        await router.publish("room:1", 1)
        router.send_to_connection(conn_id, 2)
        await router.publish("room:1", 3)
        frames = [await alice.recv() for _ in range(3)]
    assert [(f["type"], f["data"]) for f in frames] == [
        ("message", 1), ("direct", 2), ("message", 3)]


# ------------------------------------------------------------------ disconnect_user
async def test_disconnect_user_closes_every_connection_of_that_user_and_counts_them() -> None:
    async with running_server() as router, connect(router) as a1, connect(router) as a2, \
            connect(router, sub="bob") as bob:
        closed = await router.disconnect_user("alice")
        codes = [(await a1.closed())[0], (await a2.closed())[0]]
        pong = await bob.call({"type": "ping", "id": 1})
    assert closed == 2
    assert codes == [1000, 1000]
    assert pong["type"] == "pong"


async def test_disconnect_user_passes_its_code_and_reason() -> None:
    async with running_server() as router, connect(router) as alice:
        assert await router.disconnect_user("alice", code=4403, reason="account disabled") == 1
        code, reason = await alice.closed()
    assert (code, reason) == (4403, "account disabled")


async def test_a_long_close_reason_is_cut_to_120_bytes_of_valid_utf8() -> None:
    async with running_server() as router, connect(router) as alice:
        await router.disconnect_user("alice", code=4403, reason="é" * 100)  # 200 bytes
        code, reason = await alice.closed()
    assert code == 4403
    assert reason is not None and 0 < len(reason.encode()) <= 120
    assert reason == "é" * len(reason)


async def test_disconnect_user_of_nobody_returns_zero() -> None:
    async with running_server() as router, connect(router) as alice:
        assert await router.disconnect_user("nobody") == 0
        assert (await alice.call({"type": "ping", "id": 1}))["type"] == "pong"


async def test_disconnect_user_removes_the_user_s_connections_from_the_stats() -> None:
    async with running_server() as router, connect(router) as alice, connect(
            router, sub="bob"):
        assert router.stats()["connections"] == 2
        await router.disconnect_user("alice")
        await alice.closed()
        with trio.fail_after(WAIT):
            while router.stats()["connections"] != 1:  # noqa: ASYNC110 (no event to await)
                await trio.sleep(0.01)
        assert router.stats()["users"] == 1


# ------------------------------------------------------------------ app commands
async def test_an_app_command_gets_the_principal_and_payload_and_its_reply_echoes_the_id(
) -> None:
    async with running_server() as router, connect(router) as alice:
        seen: list[tuple[str, dict[str, Any]]] = []

        @router.command("request_metrics")
        async def request_metrics(principal: Principal, payload: dict[str, Any]) -> Any:
            seen.append((principal.user_id, payload))
            return {"window": payload["window"], "for": principal.user_id}

        reply = await alice.call({"type": "request_metrics", "id": "m1", "window": 5})
    assert reply == {"type": "request_metrics", "id": "m1",
                     "data": {"window": 5, "for": "alice"}}
    assert seen == [("alice", {"type": "request_metrics", "id": "m1", "window": 5})]


async def test_a_built_in_command_name_cannot_be_registered() -> None:
    async with running_server() as router:
        with pytest.raises(ValueError, match="built-in"):
            router.command("publish")


async def test_a_raising_app_command_gets_an_internal_error_and_harms_nobody() -> None:
    async with running_server() as router, connect(router) as alice, connect(
            router, sub="bob") as bob:

        @router.command("explode")
        async def explode(principal: Principal, payload: dict[str, Any]) -> Any:
            raise RuntimeError("boom")

        await bob.subscribe("room:1")
        await alice.subscribe("room:1")
        error = await alice.call({"type": "explode", "id": 7})
        await router.publish("room:1", "after")
        bob_got = await bob.recv_type("message")
        alice_got = await alice.recv_type("message")
        pong = await alice.call({"type": "ping", "id": 8})
    assert (error["type"], error["id"], error["code"]) == ("error", 7, "internal")
    assert "boom" not in error["message"]  # no internals leak to clients
    assert bob_got["data"] == alice_got["data"] == "after"
    assert pong["type"] == "pong"


async def test_an_app_command_returning_non_json_gets_an_internal_error() -> None:
    async with running_server() as router, connect(router) as alice:

        @router.command("weird")
        async def weird(principal: Principal, payload: dict[str, Any]) -> Any:
            return {"obj": object()}

        error = await alice.call({"type": "weird", "id": 1})
        pong = await alice.call({"type": "ping", "id": 2})
    assert (error["type"], error["code"]) == ("error", "internal")
    assert pong["type"] == "pong"


async def test_an_app_command_returning_too_deep_data_gets_an_internal_error() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    async with running_server() as router, connect(router) as alice:

        @router.command("deep")
        async def deep_reply(principal: Principal, payload: dict[str, Any]) -> Any:
            return deep

        error = await alice.call({"type": "deep", "id": 1})
        pong = await alice.call({"type": "ping", "id": 2})
    assert (error["type"], error["code"]) == ("error", "internal")
    assert pong["type"] == "pong"


async def test_a_slow_app_command_does_not_hold_up_other_connections() -> None:
    async with running_server() as router, connect(router) as alice, connect(
            router, sub="bob") as bob, connect(router, sub="carol") as carol:
        release = trio.Event()

        @router.command("slow")
        async def slow(principal: Principal, payload: dict[str, Any]) -> Any:
            await release.wait()
            return "done"

        await bob.subscribe("room:1")
        await alice.send({"type": "slow", "id": 1})
        for n in range(5):
            assert (await carol.publish("room:1", n))["offset"] == n + 1
            assert (await bob.recv_type("message"))["data"] == n
        assert (await bob.call({"type": "ping", "id": 2}))["type"] == "pong"
        release.set()
        reply = await alice.recv()
    assert (reply["type"], reply["data"]) == ("slow", "done")
