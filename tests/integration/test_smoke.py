"""The shortest path through the server: connect, subscribe, publish, receive."""

from tests.support import connect, running_server


async def test_a_published_message_reaches_a_subscriber() -> None:
    async with (
        running_server() as router,
        connect(router) as alice,
        connect(router, sub="bob") as bob,
    ):
        reply = await alice.subscribe("project:12")
        assert reply["rooms"]["project:12"]["ok"] is True
        published = await bob.publish("project:12", {"task_id": 7}, event="task.created")
        assert published["offset"] == 1
        message = await alice.recv_type("message")
        assert message["data"] == {"task_id": 7}
        assert message["sender"] == "bob"
        assert message["event"] == "task.created"
