"""Client commands over real sockets (contract §3, §4, §5): replies, filters, errors."""

from __future__ import annotations

import re
from typing import Any

import trio

from roomcast.router import Router
from tests.support import WAIT, Client, connect, make_token, running_server

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def messages_until(client: Client, sentinel_room: str) -> list[dict[str, Any]]:
    """Every `message` frame received before the first one in `sentinel_room`."""
    out: list[dict[str, Any]] = []
    with trio.fail_after(WAIT):
        while True:
            frame = await client.recv()
            if frame["type"] != "message":
                continue
            if frame["room"] == sentinel_room:
                return out
            out.append(frame)


async def fence(router: Router, reader: Client) -> list[dict[str, Any]]:
    """Publish (server-side) into a room `reader` is subscribed to without filters, and
    return what `reader` received before it: everything delivered to it up to now."""
    await router.publish("fence:0", "fence")
    return await messages_until(reader, "fence:0")


# ------------------------------------------------------------------ subscribe replies
async def test_subscribe_replies_ok_offset_and_epoch_per_room() -> None:
    async with running_server() as router, connect(router) as alice:
        for n in range(3):
            await alice.publish("project:12", {"n": n})
        reply = await alice.call({"type": "subscribe", "id": 1,
                                  "rooms": ["project:12", "project:99"]})
    assert reply["type"] == "subscribed"
    assert reply["id"] == 1
    assert set(reply["rooms"]) == {"project:12", "project:99"}
    busy, fresh = reply["rooms"]["project:12"], reply["rooms"]["project:99"]
    assert busy["ok"] is True and busy["offset"] == 3
    assert fresh["ok"] is True and fresh["offset"] == 0
    assert isinstance(busy["epoch"], str) and busy["epoch"]
    assert isinstance(fresh["epoch"], str) and fresh["epoch"]


async def test_subscribe_reports_bad_room_and_forbidden_per_room() -> None:
    async with running_server() as router, connect(router, rooms=["project:*"]) as alice:
        reply = await alice.call({"type": "subscribe", "id": "s",
                                  "rooms": ["project:1", "bad room!", "secret:1", "x" * 201]})
    rooms = reply["rooms"]
    assert rooms["project:1"]["ok"] is True
    assert rooms["bad room!"] == {"ok": False, "error": "bad_room"}
    assert rooms["x" * 201] == {"ok": False, "error": "bad_room"}
    assert rooms["secret:1"] == {"ok": False, "error": "forbidden"}


async def test_a_forbidden_room_delivers_nothing() -> None:
    async with running_server() as router, connect(router, rooms=["project:*", "fence:*"]
                                                  ) as alice, connect(router, sub="bob") as bob:
        await alice.subscribe("secret:1", "fence:0")
        await bob.publish("secret:1", "psst")
        assert await fence(router, alice) == []


async def test_too_many_subscriptions_is_reported_per_room() -> None:
    async with running_server(max_subscriptions=2) as router, connect(router) as alice:
        reply = await alice.subscribe("a:1", "a:2", "a:3")
        assert reply["rooms"]["a:1"]["ok"] is True
        assert reply["rooms"]["a:2"]["ok"] is True
        assert reply["rooms"]["a:3"] == {"ok": False, "error": "too_many_subscriptions"}
        again = await alice.subscribe("a:1")  # re-subscribing is not one more
        assert again["rooms"]["a:1"]["ok"] is True
        await alice.call({"type": "unsubscribe", "id": "u", "rooms": ["a:2"]})
        assert (await alice.subscribe("a:3"))["rooms"]["a:3"]["ok"] is True


async def test_a_room_listed_twice_is_answered_once() -> None:
    async with running_server() as router, connect(router) as alice:
        reply = await alice.subscribe("a:1", "a:1")
    assert list(reply["rooms"]) == ["a:1"]


# ------------------------------------------------------------------ filters
async def test_resubscribing_replaces_the_filters() -> None:
    async with running_server() as router, connect(router) as alice, connect(
            router, sub="bob") as bob:
        await alice.subscribe("fence:0")
        await alice.subscribe("room:1", events=["a"])
        reply = await alice.subscribe("room:1", events=["b"])
        assert reply["rooms"]["room:1"]["ok"] is True
        await bob.publish("room:1", 1, event="a")
        await bob.publish("room:1", 2, event="b")
        assert [m["data"] for m in await fence(router, alice)] == [2]
        await alice.subscribe("room:1")  # no filters: everything again
        await bob.publish("room:1", 3, event="a")
        await bob.publish("room:1", 4, event="c")
        assert [m["data"] for m in await fence(router, alice)] == [3, 4]


async def test_an_events_filter_delivers_exactly_the_listed_events() -> None:
    async with running_server() as router, connect(router) as alice, connect(
            router, sub="bob") as bob:
        await alice.subscribe("fence:0")
        await alice.subscribe("room:1", events=["task.created", "task.done"])
        for n, name in enumerate(["task.created", "task.deleted", None, "task.done",
                                  "task.created", "TASK.DONE"]):
            extra = {"event": name} if name is not None else {}
            await bob.publish("room:1", n, **extra)
        got = await fence(router, alice)
    assert [(m["data"], m["event"], m["offset"]) for m in got] == [
        (0, "task.created", 1), (3, "task.done", 4), (4, "task.created", 5)]


async def test_a_where_filter_delivers_exactly_the_equal_data() -> None:
    async with running_server() as router, connect(router) as alice, connect(
            router, sub="bob") as bob:
        await alice.subscribe("fence:0")
        await alice.subscribe("room:1", where={"account_id": "123", "flag": True})
        candidates: list[Any] = [
            {"account_id": "123", "flag": True, "n": 0},     # yes
            {"account_id": 123, "flag": True, "n": 1},       # a number is not a string
            {"account_id": "123", "flag": 1, "n": 2},        # 1 is not true
            {"account_id": "123", "n": 3},                   # missing key
            "account_id",                                    # not an object
            None,
            {"account_id": "123", "flag": True, "n": 6, "more": [1]},  # yes
            {"account_id": "124", "flag": True, "n": 7},
        ]
        for data in candidates:
            await bob.publish("room:1", data)
        got = await fence(router, alice)
    assert [m["data"]["n"] for m in got] == [0, 6]
    assert [m["offset"] for m in got] == [1, 7]


async def test_events_and_where_together_must_both_pass() -> None:
    async with running_server() as router, connect(router) as alice, connect(
            router, sub="bob") as bob:
        await alice.subscribe("fence:0")
        await alice.subscribe("room:1", events=["e"], where={"k": 1})
        await bob.publish("room:1", {"k": 1, "n": 0}, event="e")
        await bob.publish("room:1", {"k": 1, "n": 1}, event="f")
        await bob.publish("room:1", {"k": 2, "n": 2}, event="e")
        await bob.publish("room:1", {"k": 1.0, "n": 3}, event="e")
        got = await fence(router, alice)
    assert [m["data"]["n"] for m in got] == [0, 3]


async def test_filters_are_per_connection() -> None:
    async with running_server() as router, connect(router) as alice, connect(
            router, sub="carol") as carol, connect(router, sub="bob") as bob:
        await alice.subscribe("fence:0")
        await carol.subscribe("fence:0")
        await alice.subscribe("room:1", events=["a"])
        await carol.subscribe("room:1")
        await bob.publish("room:1", 1, event="a")
        await bob.publish("room:1", 2, event="b")
        assert [m["data"] for m in await fence(router, alice)] == [1]
        assert [m["data"] for m in await messages_until(carol, "fence:0")] == [1, 2]


# ------------------------------------------------------------------ unsubscribe
async def test_unsubscribe_lists_every_room_even_ones_not_subscribed() -> None:
    async with running_server() as router, connect(router) as alice:
        await alice.subscribe("room:1")
        reply = await alice.call({"type": "unsubscribe", "id": 4,
                                  "rooms": ["room:1", "never:joined"]})
    assert reply == {"type": "unsubscribed", "id": 4, "rooms": ["room:1", "never:joined"]}


async def test_after_unsubscribe_nothing_more_is_delivered() -> None:
    async with running_server() as router, connect(router) as alice, connect(
            router, sub="bob") as bob:
        await alice.subscribe("fence:0")
        await alice.subscribe("room:1")
        await bob.publish("room:1", "before")
        assert [m["data"] for m in await fence(router, alice)] == ["before"]
        await alice.call({"type": "unsubscribe", "id": 4, "rooms": ["room:1"]})
        await bob.publish("room:1", "after")
        assert await fence(router, alice) == []


# ------------------------------------------------------------------ publish
async def test_publish_replies_published_with_room_and_offset() -> None:
    async with running_server() as router, connect(router) as alice:
        first = await alice.call({"type": "publish", "id": 3, "room": "channel:456",
                                  "event": "message.new", "data": {"text": "hi"}})
        second = await alice.call({"type": "publish", "id": 4, "room": "channel:456",
                                   "data": None})
    epoch = first["epoch"]  # which stream the message went into (§17)
    assert isinstance(epoch, str) and epoch
    assert first == {"type": "published", "id": 3, "room": "channel:456", "offset": 1,
                     "epoch": epoch}
    assert second == {"type": "published", "id": 4, "room": "channel:456", "offset": 2,
                      "epoch": epoch}


async def test_publish_is_forbidden_without_a_matching_publish_pattern() -> None:
    async with running_server() as router, connect(router, publish=["chat:*"]) as alice:
        reply = await alice.call({"type": "publish", "id": 3, "room": "channel:456",
                                  "data": 1})
        allowed = await alice.call({"type": "publish", "id": 4, "room": "chat:1", "data": 1})
    assert reply["type"] == "error"
    assert (reply["id"], reply["code"]) == (3, "forbidden")
    assert "channel:456" in reply["message"]
    assert allowed["type"] == "published"


async def test_publish_is_forbidden_for_a_token_without_publish_claim() -> None:
    async with running_server() as router, connect(router, make_token("alice", rooms=["*"])
                                                  ) as alice:
        reply = await alice.call({"type": "publish", "id": 3, "room": "user:alice",
                                  "data": 1})
    assert (reply["type"], reply["code"]) == ("error", "forbidden")


async def test_a_forbidden_publish_delivers_nothing() -> None:
    async with running_server() as router, connect(router) as alice, connect(
            router, sub="mallory", publish=["fence:*"]) as mallory:
        await alice.subscribe("fence:0", "room:1")
        await mallory.call({"type": "publish", "id": 1, "room": "room:1", "data": "x"})
        assert await fence(router, alice) == []


async def test_publish_to_a_bad_room_is_a_bad_room_error() -> None:
    async with running_server() as router, connect(router) as alice:
        reply = await alice.call({"type": "publish", "id": "p", "room": "no spaces", "data": 1})
    assert (reply["type"], reply["id"], reply["code"]) == ("error", "p", "bad_room")


async def test_the_publisher_gets_its_own_message_when_subscribed() -> None:
    async with running_server() as router, connect(router) as alice:
        await alice.subscribe("room:1")
        await alice.send({"type": "publish", "id": 9, "room": "room:1", "data": {"x": 1}})
        frames = [await alice.recv(), await alice.recv()]
    by_type = {f["type"]: f for f in frames}
    assert set(by_type) == {"published", "message"}
    assert by_type["message"]["data"] == {"x": 1}
    assert by_type["message"]["sender"] == "alice"
    assert by_type["message"]["offset"] == by_type["published"]["offset"]


async def test_the_publisher_does_not_get_its_message_when_not_subscribed() -> None:
    async with running_server() as router, connect(router) as alice:
        await alice.subscribe("fence:0")
        await alice.publish("room:1", "mine")
        assert await fence(router, alice) == []


async def test_a_message_frame_has_the_contract_shape() -> None:
    async with running_server() as router, connect(router) as alice, connect(
            router, sub="bob") as bob:
        await alice.subscribe("project:12")
        await bob.publish("project:12", {"task_id": 7}, event="task.created")
        await bob.publish("project:12", [1, 2])
        first = await alice.recv_type("message")
        second = await alice.recv_type("message")
    assert set(first) == {"type", "room", "offset", "event", "data", "sender", "ts"}
    assert (first["room"], first["offset"], first["event"], first["data"], first["sender"]) == (
        "project:12", 1, "task.created", {"task_id": 7}, "bob")
    assert ISO_Z.fullmatch(first["ts"])
    assert (second["offset"], second["event"], second["data"]) == (2, None, [1, 2])


async def test_offsets_increase_by_one_per_room_independently() -> None:
    async with running_server() as router, connect(router) as alice:
        offsets = [(await alice.publish(room, n))["offset"]
                   for n, room in enumerate(["a:1", "b:1", "a:1", "a:1", "b:1"])]
    assert offsets == [1, 1, 2, 3, 2]


# ------------------------------------------------------------------ ping and errors
async def test_ping_gets_pong_with_server_time_and_the_id() -> None:
    async with running_server() as router, connect(router) as alice:
        pong = await alice.call({"type": "ping", "id": 8})
        named = await alice.call({"type": "ping", "id": "p-1"})
    assert pong["type"] == "pong" and pong["id"] == 8
    assert ISO_Z.fullmatch(pong["server_time"])
    assert named["type"] == "pong" and named["id"] == "p-1"


async def test_a_ping_without_id_gets_a_pong_with_a_null_id() -> None:
    async with running_server() as router, connect(router) as alice:
        await alice.send({"type": "ping"})
        pong = await alice.recv()
    assert pong["type"] == "pong"
    assert pong.get("id") is None


async def test_errors_echo_the_command_id() -> None:
    frames: list[tuple[dict[str, Any], str]] = [
        ({"type": "teleport", "id": "t"}, "unknown_type"),
        ({"type": "subscribe", "id": 11, "rooms": "room:1"}, "bad_request"),
        ({"type": "publish", "id": "x-12", "room": 5}, "bad_request"),
        ({"type": "history", "id": 13, "room": "room:1", "limit": 0}, "bad_request"),
        ({"type": "publish", "id": 14, "room": "bad room", "data": 1}, "bad_room"),
        ({"type": "publish", "id": 15, "room": "locked:1", "data": 1}, "forbidden"),
    ]
    async with running_server() as router, connect(router, publish=["open:*"]) as alice:
        for frame, code in frames:
            reply = await alice.call(frame)
            assert reply["type"] == "error", reply
            assert (reply["id"], reply["code"]) == (frame["id"], code)
            assert isinstance(reply["message"], str) and reply["message"]


async def test_bad_json_gets_a_bad_json_error() -> None:
    async with running_server() as router, connect(router) as alice:
        await alice.send("{not json")
        reply = await alice.recv()
    assert (reply["type"], reply["code"]) == ("error", "bad_json")


async def test_a_non_object_frame_gets_a_bad_request_error() -> None:
    async with running_server() as router, connect(router) as alice:
        await alice.send('["subscribe"]')
        reply = await alice.recv()
    assert (reply["type"], reply["code"]) == ("error", "bad_request")


async def test_an_error_never_closes_the_connection() -> None:
    bad_frames: list[str | dict[str, Any]] = [
        "nope", "[]", "42", '{"type": 1}', {"type": "teleport", "id": 1},
        {"type": "ping", "id": True}, {"type": "subscribe", "id": 2, "rooms": []},
        {"type": "publish", "id": 3, "room": "no way", "data": 1},
        {"type": "publish", "id": 4, "room": "locked:1", "data": 1},
        {"type": "unsubscribe", "id": 5},
    ]
    async with running_server() as router, connect(router, publish=["open:*"]) as alice:
        for frame in bad_frames:
            await alice.send(frame)
            assert (await alice.recv())["type"] == "error"
        pong = await alice.call({"type": "ping", "id": "still-here"})
        assert pong["type"] == "pong"
        reply = await alice.subscribe("room:1")
        assert reply["rooms"]["room:1"]["ok"] is True


async def test_one_connection_s_bad_input_does_not_affect_another_s_deliveries() -> None:
    async with running_server(max_message_bytes=4096) as router, connect(
            router, sub="carol") as carol, connect(router, sub="bob") as bob, connect(
            router, sub="mallory") as mallory:
        await carol.subscribe("room:1")
        await mallory.subscribe("room:1")
        for n in range(10):
            await mallory.send("garbage" if n % 2 else {"type": "teleport", "id": n})
            await bob.publish("room:1", n)
        await mallory.send("x" * 10_000)  # too big: mallory is closed with 1009
        code, _ = await mallory.closed()
        for n in range(10, 15):
            await bob.publish("room:1", n)
        received = [(await carol.recv_type("message"))["data"] for _ in range(15)]
    assert code == 1009
    assert received == list(range(15))


# ------------------------------------------------------------------ personal and default rooms
async def test_the_personal_room_is_always_subscribable() -> None:
    async with running_server() as router, connect(router, rooms=["project:*"]) as alice, \
            connect(router, make_token("dave", rooms=[])) as dave:
        reply = await alice.subscribe("user:alice", "user:bob")
        own = await dave.subscribe("user:dave")
    assert reply["rooms"]["user:alice"]["ok"] is True
    assert reply["rooms"]["user:bob"] == {"ok": False, "error": "forbidden"}
    assert own["rooms"]["user:dave"]["ok"] is True


async def test_a_token_without_rooms_gets_only_its_personal_room_by_default() -> None:
    async with running_server() as router, connect(router, make_token("alice")) as alice:
        reply = await alice.subscribe("user:alice", "user:bob", "project:1")
    assert reply["rooms"]["user:alice"]["ok"] is True
    assert reply["rooms"]["user:bob"]["error"] == "forbidden"
    assert reply["rooms"]["project:1"]["error"] == "forbidden"


async def test_default_rooms_with_sub_apply_to_tokens_without_rooms() -> None:
    async with running_server(default_rooms=("user:{sub}", "team:{sub}:*", "lobby")
                              ) as router, connect(router, make_token("alice")) as alice:
        reply = await alice.subscribe("team:alice:general", "team:bob:general", "lobby",
                                      "project:1")
    rooms = reply["rooms"]
    assert rooms["team:alice:general"]["ok"] is True
    assert rooms["lobby"]["ok"] is True
    assert rooms["team:bob:general"]["error"] == "forbidden"
    assert rooms["project:1"]["error"] == "forbidden"


async def test_default_rooms_do_not_apply_to_tokens_with_rooms() -> None:
    async with running_server(default_rooms=("user:{sub}", "lobby")) as router, connect(
            router, make_token("alice", rooms=["project:*"])) as alice:
        reply = await alice.subscribe("lobby", "project:1")
    assert reply["rooms"]["lobby"]["error"] == "forbidden"
    assert reply["rooms"]["project:1"]["ok"] is True


async def test_a_message_to_the_personal_room_reaches_only_that_user() -> None:
    async with running_server() as router, connect(router, make_token("alice")) as alice, \
            connect(router, sub="bob") as bob:
        await alice.subscribe("user:alice")
        await bob.publish("user:alice", "for alice")
        message = await alice.recv_type("message")
    assert (message["room"], message["data"], message["sender"]) == (
        "user:alice", "for alice", "bob")
