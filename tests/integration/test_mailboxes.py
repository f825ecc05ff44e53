"""Both kinds of mailbox keep the same contract over real sockets: every frame in order,
many frames per write, and a stalled reader closed 4409 without holding anybody up."""

from __future__ import annotations

import pytest
import trio

from tests.support import WAIT, connect, running_server

KINDS = ["direct", "channel"]


@pytest.mark.parametrize("mailbox", KINDS)
async def test_every_subscriber_gets_every_message_in_order(mailbox: str) -> None:
    async with running_server(mailbox=mailbox) as router, connect(router, sub="a") as a, \
            connect(router, sub="b") as b:
        await a.subscribe("room:1")
        await b.subscribe("room:1")
        for n in range(1, 201):  # a burst: most of it is queued and written in batches
            await router.publish("room:1", {"n": n, "pad": "y" * 2000})
        for client in (a, b):
            got = [(await client.recv_type("message"))["offset"] for _ in range(200)]
            assert got == list(range(1, 201))


@pytest.mark.parametrize("mailbox", KINDS)
async def test_replies_and_messages_share_one_ordered_mailbox(mailbox: str) -> None:
    async with running_server(mailbox=mailbox) as router, connect(
            router, sub="a", rooms=["*"], publish=["*"]) as a:
        await a.subscribe("room:2")
        for n in range(1, 31):  # within the rate burst (40)
            await a.send({"type": "publish", "id": n, "room": "room:2", "data": n})
        seen = []
        with trio.fail_after(WAIT):
            while len(seen) < 60:
                frame = await a.recv()
                seen.append((frame["type"], frame.get("offset")))
        messages = [offset for kind, offset in seen if kind == "message"]
        replies = [offset for kind, offset in seen if kind == "published"]
        assert messages == replies == list(range(1, 31))
        # the publisher receives its own message before the reply that acknowledges it
        assert all(seen.index(("message", n)) < seen.index(("published", n))
                   for n in range(1, 31))


@pytest.mark.parametrize("mailbox", KINDS)
async def test_nothing_is_sent_after_the_close_is_decided(mailbox: str) -> None:
    import trio_websocket

    async with running_server(mailbox=mailbox) as router, connect(router, sub="gone") as gone:
        await gone.subscribe("room:3")
        await router.disconnect_user("gone", 4409, "too slow")
        await router.publish("room:3", "after the close")  # at once, before the actor runs
        with pytest.raises(trio_websocket.ConnectionClosed) as closed, trio.fail_after(WAIT):
            frame = await gone.ws.get_message()
            raise AssertionError(f"got {frame!r} after the close was decided")
        assert closed.value.reason.code == 4409
        assert router.metrics.drops["closing"] >= 1
