"""History and recovery over real sockets (protocol §4 `history`, `subscribe` with `since`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from roomcast.router import Router
from tests.support import WAIT, Client, connect, make_token, running_server

MESSAGE_KEYS = {"type", "room", "offset", "event", "data", "sender", "ts"}
FAST = {"rate_per_second": 100_000, "rate_burst": 100_000}


async def subscribe_raw(client: Client, room: str, **extra: Any) -> dict[str, Any]:
    """Send a subscribe and return the very next frame, which must be its reply: nothing
    (no recovered or live message) may overtake it."""
    await client.send({"type": "subscribe", "id": "s", "rooms": [room], **extra})
    reply = await client.recv()
    assert reply["type"] == "subscribed", reply
    return reply


async def next_messages(client: Client, n: int) -> list[dict[str, Any]]:
    """The next n frames, each of which must be a message."""
    frames = [await client.recv() for _ in range(n)]
    assert all(f["type"] == "message" for f in frames), frames
    return frames


async def epoch_of(client: Client, room: str) -> str:
    reply = await client.call({"type": "history", "id": "epoch", "room": room, "limit": 1})
    epoch: str = reply["epoch"]
    return epoch


# ------------------------------------------------------------------ history


async def test_history_without_since_returns_the_newest_limit_oldest_first() -> None:
    async with running_server() as router, connect(router) as alice:
        for i in range(1, 6):
            await router.publish("project:12", {"n": i}, event="task.created")
        reply = await alice.call({"type": "history", "id": 6, "room": "project:12", "limit": 3})
        assert set(reply) == {"type", "id", "room", "epoch", "offset", "messages"}
        assert reply["type"] == "history" and reply["id"] == 6
        assert reply["room"] == "project:12" and reply["offset"] == 5
        assert isinstance(reply["epoch"], str) and reply["epoch"]
        assert [m["offset"] for m in reply["messages"]] == [3, 4, 5]
        assert [m["data"] for m in reply["messages"]] == [{"n": 3}, {"n": 4}, {"n": 5}]


async def test_history_with_since_returns_the_first_limit_after_it() -> None:
    async with running_server() as router, connect(router) as alice:
        for i in range(1, 8):
            await router.publish("project:12", i)
        reply = await alice.call(
            {"type": "history", "id": "h", "room": "project:12", "since": 2, "limit": 3}
        )
        assert [m["offset"] for m in reply["messages"]] == [3, 4, 5]
        assert reply["offset"] == 7


async def test_history_limit_defaults_to_100() -> None:
    async with running_server(history_size=300) as router, connect(router) as alice:
        for i in range(1, 131):
            await router.publish("project:12", i)
        newest = await alice.call({"type": "history", "id": 1, "room": "project:12"})
        assert [m["offset"] for m in newest["messages"]] == list(range(31, 131))
        after = await alice.call({"type": "history", "id": 2, "room": "project:12", "since": 0})
        assert [m["offset"] for m in after["messages"]] == list(range(1, 101))


async def test_history_messages_have_the_live_message_shape() -> None:
    async with running_server() as router, connect(router) as alice, \
            connect(router, sub="bob") as bob:
        await alice.subscribe("project:12")
        await bob.publish("project:12", {"task_id": 7}, event="task.created")
        live = await alice.recv_type("message")
        reply = await alice.call({"type": "history", "id": 1, "room": "project:12"})
        assert reply["messages"] == [live]
        assert set(live) == MESSAGE_KEYS
        assert live["sender"] == "bob" and live["ts"].endswith("Z")


async def test_history_needs_subscribe_permission_but_not_a_subscription() -> None:
    async with running_server() as router, \
            connect(router, rooms=["project:*"], publish=[]) as alice:
        await router.publish("project:12", "visible")
        await router.publish("secret:1", "hidden")
        allowed = await alice.call({"type": "history", "id": 1, "room": "project:12"})
        assert [m["data"] for m in allowed["messages"]] == ["visible"]
        refused = await alice.call({"type": "history", "id": 2, "room": "secret:1"})
        assert refused["type"] == "error" and refused["code"] == "forbidden"
        assert refused["id"] == 2


async def test_history_of_a_room_never_published_to_is_empty_at_offset_0() -> None:
    async with running_server() as router, connect(router) as alice:
        reply = await alice.call({"type": "history", "id": 1, "room": "project:new"})
        assert reply["offset"] == 0 and reply["messages"] == []


async def test_history_since_the_latest_offset_is_empty() -> None:
    async with running_server() as router, connect(router) as alice:
        for i in range(3):
            await router.publish("project:12", i)
        reply = await alice.call({"type": "history", "id": 1, "room": "project:12", "since": 3})
        assert reply["messages"] == [] and reply["offset"] == 3


async def test_history_is_bounded_by_history_size() -> None:
    async with running_server(history_size=4) as router, connect(router) as alice:
        for i in range(10):
            await router.publish("project:12", i)
        reply = await alice.call({"type": "history", "id": 1, "room": "project:12", "since": 0})
        assert [m["offset"] for m in reply["messages"]] == [7, 8, 9, 10]


# ------------------------------------------------------------------ recovery


async def test_since_sends_missed_messages_after_the_reply_and_before_live_ones() -> None:
    async with running_server() as router, connect(router) as alice, \
            connect(router, sub="bob") as bob:
        for i in range(1, 6):
            await bob.publish("project:12", {"n": i})
        epoch = await epoch_of(alice, "project:12")
        reply = await subscribe_raw(
            alice, "project:12", since={"project:12": {"offset": 2, "epoch": epoch}}
        )
        assert reply["rooms"]["project:12"] == {
            "ok": True, "offset": 5, "epoch": epoch, "recovered": True
        }
        await bob.publish("project:12", {"n": 6})
        frames = await next_messages(alice, 4)
        assert [f["offset"] for f in frames] == [3, 4, 5, 6]
        assert [f["data"] for f in frames] == [{"n": 3}, {"n": 4}, {"n": 5}, {"n": 6}]
        assert all(f["sender"] == "bob" for f in frames)


async def test_since_at_the_current_offset_recovers_with_nothing_to_send() -> None:
    async with running_server() as router, connect(router) as alice, \
            connect(router, sub="bob") as bob:
        for i in range(3):
            await bob.publish("project:12", i)
        epoch = await epoch_of(alice, "project:12")
        reply = await subscribe_raw(
            alice, "project:12", since={"project:12": {"offset": 3, "epoch": epoch}}
        )
        assert reply["rooms"]["project:12"]["recovered"] is True
        await bob.publish("project:12", "live")
        (live,) = await next_messages(alice, 1)
        assert live["offset"] == 4 and live["data"] == "live"


async def test_recovery_while_others_publish_is_contiguous_without_duplicates() -> None:
    publishers, per_publisher = 4, 100
    total = publishers * per_publisher
    async with running_server(history_size=1000, **FAST) as router, \
            connect(router, sub="watcher") as watcher:
        await watcher.subscribe("room:busy")
        epoch = (await epoch_of(watcher, "room:busy"))
        seen = trio.Event()
        thresholds = {60: trio.Event(), 160: trio.Event(), 300: trio.Event()}

        async def publish_many(i: int) -> None:
            async with connect(router, sub=f"pub{i}") as pub:
                for n in range(per_publisher):
                    reply = await pub.publish("room:busy", {"p": i, "n": n})
                    assert reply["type"] == "published", reply

        async def watch() -> None:
            got = 0
            while got < total:
                got = (await watcher.recv_type("message"))["offset"]
                for at, event in thresholds.items():
                    if got >= at:
                        event.set()
            seen.set()

        async def recover(at: int, results: dict[int, list[int]]) -> None:
            await thresholds[at].wait()
            since = at - 25
            async with connect(router, sub=f"late{at}") as late:
                reply = await subscribe_raw(
                    late, "room:busy", since={"room:busy": {"offset": since, "epoch": epoch}}
                )
                assert reply["rooms"]["room:busy"]["recovered"] is True, reply
                offsets = []
                while not offsets or offsets[-1] < total:
                    frame = await late.recv()
                    assert frame["type"] == "message", frame
                    offsets.append(frame["offset"])
                results[since] = offsets

        results: dict[int, list[int]] = {}
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                for at in thresholds:
                    nursery.start_soon(recover, at, results)
                for i in range(publishers):
                    nursery.start_soon(publish_many, i)
        assert seen.is_set()
        assert len(results) == len(thresholds)
        for since, offsets in results.items():
            assert offsets == list(range(since + 1, total + 1)), (since, offsets[:10])


async def test_since_from_another_epoch_is_not_recovered() -> None:
    async with running_server() as first, connect(first) as alice:
        await first.publish("project:12", "before the restart")
        old_epoch = await epoch_of(alice, "project:12")
    async with running_server() as second, connect(second) as alice, \
            connect(second, sub="bob") as bob:
        await second.publish("project:12", "after the restart")
        reply = await subscribe_raw(
            alice, "project:12", since={"project:12": {"offset": 1, "epoch": old_epoch}}
        )
        entry = reply["rooms"]["project:12"]
        assert entry["recovered"] is False and "missed" not in entry
        assert entry["offset"] == 1 and entry["epoch"] != old_epoch
        await bob.publish("project:12", "live")
        (live,) = await next_messages(alice, 1)
        assert live["offset"] == 2 and live["data"] == "live"


async def test_since_older_than_history_reports_missed_and_sends_the_rest() -> None:
    async with running_server(history_size=3) as router, connect(router) as alice, \
            connect(router, sub="bob") as bob:
        for i in range(1, 11):
            await router.publish("project:12", i)
        epoch = await epoch_of(alice, "project:12")
        reply = await subscribe_raw(
            alice, "project:12", since={"project:12": {"offset": 2, "epoch": epoch}}
        )
        assert reply["rooms"]["project:12"] == {
            "ok": True, "offset": 10, "epoch": epoch, "recovered": False,
            "missed": {"from": 3, "to": 7},
        }
        await bob.publish("project:12", 11)
        frames = await next_messages(alice, 4)
        assert [f["offset"] for f in frames] == [8, 9, 10, 11]
        assert [f["data"] for f in frames] == [8, 9, 10, 11]


async def test_since_ahead_of_the_room_is_not_recovered() -> None:
    async with running_server() as router, connect(router) as alice:
        await router.publish("project:12", 1)
        epoch = await epoch_of(alice, "project:12")
        reply = await subscribe_raw(
            alice, "project:12", since={"project:12": {"offset": 50, "epoch": epoch}}
        )
        entry = reply["rooms"]["project:12"]
        assert entry["recovered"] is False and "missed" not in entry and entry["offset"] == 1


async def test_since_for_a_room_the_user_may_not_read_is_forbidden() -> None:
    async with running_server() as router, connect(router, sub="admin") as admin, \
            connect(router, rooms=["project:*"]) as alice:
        for i in range(3):
            await router.publish("secret:1", i)
        epoch = await epoch_of(admin, "secret:1")
        reply = await subscribe_raw(
            alice, "secret:1", since={"secret:1": {"offset": 0, "epoch": epoch}}
        )
        assert reply["rooms"]["secret:1"] == {"ok": False, "error": "forbidden"}
        pong = await alice.call({"type": "ping", "id": "after"})
        assert pong["type"] == "pong"  # and no message frame came before it


async def test_recovery_sends_only_messages_the_subscription_filters_admit() -> None:
    async with running_server() as router, connect(router) as alice, \
            connect(router, sub="bob") as bob:
        await router.publish("project:12", {"account_id": "1"}, event="task.created")
        await router.publish("project:12", {"account_id": "1"}, event="task.deleted")
        await router.publish("project:12", {"account_id": "2"}, event="task.created")
        await router.publish("project:12", {"account_id": "1"}, event="task.created")
        epoch = await epoch_of(alice, "project:12")
        reply = await subscribe_raw(
            alice, "project:12", events=["task.created"], where={"account_id": "1"},
            since={"project:12": {"offset": 0, "epoch": epoch}},
        )
        assert reply["rooms"]["project:12"]["recovered"] is True
        await bob.publish("project:12", {"account_id": "1"}, event="task.created")
        frames = await next_messages(alice, 3)
        assert [f["offset"] for f in frames] == [1, 4, 5]


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` until it holds, for state the server announces by no event."""
    with trio.fail_after(WAIT):
        while True:
            if await check():
                return
            await trio.sleep(0.05)


async def wait_until_forgotten(router: Router, room: str) -> None:
    """Until the backplane's periodic pruning has forgotten an idle room."""
    store = router.backplane.store  # type: ignore[attr-defined]

    async def forgotten() -> bool:
        return store.get(room) is None

    await until(forgotten)


async def test_expired_history_makes_recovery_report_missed() -> None:
    async with running_server(history_ttl=0.4) as router, connect(router, sub="w") as watcher, \
            connect(router) as alice:
        await watcher.subscribe("project:12")  # a live subscriber keeps the room's epoch
        for i in range(1, 4):
            await router.publish("project:12", i)
        await router.publish("canary:1", "nobody listens")
        epoch = await epoch_of(alice, "project:12")

        async def history_expired() -> bool:
            reply = await alice.call({"type": "history", "id": "p", "room": "project:12"})
            return not reply["messages"]

        await until(history_expired)
        await wait_until_forgotten(router, "canary:1")  # pruning has run meanwhile
        reply = await subscribe_raw(
            alice, "project:12", since={"project:12": {"offset": 1, "epoch": epoch}}
        )
        assert reply["rooms"]["project:12"] == {
            "ok": True, "offset": 3, "epoch": epoch, "recovered": False,
            "missed": {"from": 2, "to": 3},
        }


async def test_a_room_with_a_subscriber_keeps_its_epoch_and_offsets_past_history_ttl() -> None:
    async with running_server(history_ttl=0.4) as router, connect(router) as alice:
        first = (await alice.subscribe("project:12"))["rooms"]["project:12"]
        await router.publish("project:12", 1)
        await alice.recv_type("message")
        await router.publish("canary:1", "nobody listens")
        await wait_until_forgotten(router, "canary:1")
        await router.publish("project:12", 2)
        message = await alice.recv_type("message")
        assert message["offset"] == 2
        assert await epoch_of(alice, "project:12") == first["epoch"]


async def test_subscribe_without_since_sends_no_old_messages() -> None:
    async with running_server() as router, connect(router) as alice, \
            connect(router, sub="bob") as bob:
        for i in range(3):
            await router.publish("project:12", i)
        reply = await subscribe_raw(alice, "project:12")
        assert reply["rooms"]["project:12"]["offset"] == 3
        assert "recovered" not in reply["rooms"]["project:12"]
        await bob.publish("project:12", "live")
        (live,) = await next_messages(alice, 1)
        assert live["offset"] == 4


async def test_since_is_per_room_in_one_subscribe() -> None:
    token = make_token("alice", rooms=["*"], publish=["*"])
    async with running_server(history_size=2) as router, connect(router, token) as alice:
        for i in range(4):
            await router.publish("room:a", i)
            await router.publish("room:b", i)
        epoch_a = await epoch_of(alice, "room:a")
        epoch_b = await epoch_of(alice, "room:b")
        await alice.send({"type": "subscribe", "id": 1, "rooms": ["room:a", "room:b", "room:c"],
                          "since": {"room:a": {"offset": 3, "epoch": epoch_a},
                                    "room:b": {"offset": 0, "epoch": epoch_b}}})
        reply = await alice.recv()
        assert reply["rooms"]["room:a"]["recovered"] is True
        assert reply["rooms"]["room:b"]["missed"] == {"from": 1, "to": 2}
        assert "recovered" not in reply["rooms"]["room:c"]
        frames = await next_messages(alice, 3)
        assert [(f["room"], f["offset"]) for f in frames] == [
            ("room:a", 4), ("room:b", 3), ("room:b", 4)
        ]


async def test_a_recovery_larger_than_the_outbox_keeps_the_connection_and_reports_missed() -> None:
    rooms = [f"room:{r}" for r in range(11)]  # 1100 messages to recover, max_pending 1000
    async with running_server() as router, connect(router) as alice:
        for room in rooms:
            for i in range(1, 101):
                await router.publish(room, i)
        since = {room: {"offset": 0, "epoch": await epoch_of(alice, room)} for room in rooms}
        await alice.send({"type": "subscribe", "id": 1, "rooms": rooms, "since": since})
        reply = await alice.recv()
        assert reply["type"] == "subscribed"
        await alice.send({"type": "ping", "id": "after"})
        got: dict[str, list[int]] = {room: [] for room in rooms}
        while (frame := await alice.recv())["type"] != "pong":
            assert frame["type"] == "message", frame
            got[frame["room"]].append(frame["offset"])
        missed_any = False
        for room in rooms:
            entry = reply["rooms"][room]
            assert entry["ok"] is True and entry["offset"] == 100
            if entry["recovered"]:
                start = 1
            else:  # the client fetches the gap with `history`, which still holds it
                missed_any = True
                assert entry["missed"]["from"] == 1
                start = entry["missed"]["to"] + 1
            assert got[room] == list(range(start, 101)), room
        assert missed_any
