"""Idempotent publish over real sockets and the embedding API (protocol §4 publish)."""

from __future__ import annotations

import trio

from tests.support import WAIT, connect, running_server


async def test_a_repeated_key_is_not_delivered_again_and_gets_the_first_offset() -> None:
    async with running_server() as router, connect(router) as alice, \
            connect(router, sub="bob") as bob:
        await alice.subscribe("channel:456")
        first = await bob.publish("channel:456", {"text": "hi"}, idempotency_key="k-1")
        again = await bob.publish("channel:456", {"text": "hi"}, idempotency_key="k-1")
        assert first["offset"] == 1 and first.get("duplicate", False) is False
        assert again == {"type": "published", "id": again["id"], "room": "channel:456",
                         "offset": 1, "epoch": first["epoch"], "duplicate": True}
        await bob.publish("channel:456", "marker")
        assert (await alice.recv())["offset"] == 1
        marker = await alice.recv()
        assert marker["data"] == "marker" and marker["offset"] == 2


async def test_a_repeated_key_keeps_the_first_offset_after_later_publishes() -> None:
    async with running_server() as router, connect(router) as alice:
        await alice.publish("channel:456", 1, idempotency_key="k-1")
        await alice.publish("channel:456", 2)
        await alice.publish("channel:456", 3, idempotency_key="k-3")
        again = await alice.publish("channel:456", 1, idempotency_key="k-1")
        assert again["offset"] == 1 and again["duplicate"] is True
        history = await alice.call({"type": "history", "id": 1, "room": "channel:456"})
        assert [m["data"] for m in history["messages"]] == [1, 2, 3]


async def test_the_same_key_in_another_room_is_independent() -> None:
    async with running_server() as router, connect(router) as alice, \
            connect(router, sub="bob") as bob:
        await alice.subscribe("channel:2")
        await bob.publish("channel:1", "one", idempotency_key="shared")
        other = await bob.publish("channel:2", "two", idempotency_key="shared")
        assert other["offset"] == 1 and other.get("duplicate", False) is False
        message = await alice.recv_type("message")
        assert message["room"] == "channel:2" and message["data"] == "two"


async def test_a_retry_from_a_new_connection_is_a_duplicate() -> None:
    async with running_server() as router, connect(router) as alice:
        await alice.subscribe("channel:456")
        async with connect(router, sub="bob") as bob:
            first = await bob.publish("channel:456", "once", idempotency_key="retry-me")
        async with connect(router, sub="bob") as bob_again:
            retry = await bob_again.publish("channel:456", "once", idempotency_key="retry-me")
            assert retry["offset"] == first["offset"] and retry["duplicate"] is True
            await bob_again.publish("channel:456", "marker")
        assert (await alice.recv_type("message"))["data"] == "once"
        assert (await alice.recv_type("message"))["data"] == "marker"


async def test_a_publish_without_a_key_is_never_a_duplicate() -> None:
    async with running_server() as router, connect(router) as alice:
        first = await alice.publish("channel:456", "same")
        second = await alice.publish("channel:456", "same")
        assert (first["offset"], second["offset"]) == (1, 2)
        assert "duplicate" not in second


async def test_the_embedding_api_honours_idempotency_keys() -> None:
    async with running_server() as router, connect(router) as alice:
        await alice.subscribe("channel:456")
        first = await router.publish("channel:456", {"n": 1}, idempotency_key="srv-1")
        again = await router.publish("channel:456", {"n": 1}, idempotency_key="srv-1")
        assert first == again == 1
        assert await router.publish_result("channel:456", {"n": 1},
                                           idempotency_key="srv-1") == (1, True)
        assert await router.publish_result("channel:456", {"n": 2},
                                           idempotency_key="srv-2") == (2, False)
        assert [(await alice.recv())["offset"] for _ in range(2)] == [1, 2]


async def test_clients_and_the_server_share_a_rooms_keys() -> None:
    async with running_server() as router, connect(router) as alice:
        published = await alice.publish("channel:456", "from a client", idempotency_key="k")
        assert await router.publish_result("channel:456", "x", idempotency_key="k") == (
            published["offset"], True
        )


async def test_an_idempotency_key_longer_than_64_characters_is_a_bad_request() -> None:
    async with running_server() as router, connect(router) as alice:
        reply = await alice.publish("channel:456", 1, idempotency_key="k" * 65)
        assert reply["type"] == "error" and reply["code"] == "bad_request"
        accepted = await alice.publish("channel:456", 1, idempotency_key="k" * 64)
        assert accepted["type"] == "published"


async def test_a_key_older_than_the_window_publishes_anew() -> None:
    async with running_server(idempotency_window=0.3) as router, connect(router) as alice:
        first = await alice.publish("channel:456", "a", idempotency_key="k")
        assert (await alice.publish("channel:456", "a", idempotency_key="k"))["duplicate"]
        with trio.fail_after(WAIT):  # nothing to await: retry until the window has passed
            while (reply := await alice.publish("channel:456", "a", idempotency_key="k")
                   ).get("duplicate"):
                assert reply["offset"] == first["offset"]
                await trio.sleep(0.05)
        assert reply["offset"] == first["offset"] + 1
