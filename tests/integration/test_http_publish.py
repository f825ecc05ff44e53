"""POST /api/publish and /api/broadcast, seen by real WebSocket subscribers (contract §8)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support import WAIT, connect, free_port, http_request, running_server

KEY = "test-api-key-0123456789"


def api_server(**overrides: Any) -> Any:
    return running_server(http_port=free_port(), api_key=KEY, **overrides)


async def test_a_published_message_reaches_subscribers_with_sender_null() -> None:
    async with api_server() as router, connect(router) as alice:
        await alice.subscribe("project:12")
        response = await http_request(router, "POST", "/api/publish", api_key=KEY, body={
            "room": "project:12", "event": "task.created", "data": {"task_id": 7}})
        assert response.status == 200
        answer = response.json()  # the epoch names the room's stream (contract §17)
        assert answer == {"offset": 1, "epoch": answer["epoch"], "duplicate": False}
        assert isinstance(answer["epoch"], str) and answer["epoch"]
        message = await alice.recv_type("message")
        assert message["room"] == "project:12"
        assert message["offset"] == 1
        assert message["event"] == "task.created"
        assert message["data"] == {"task_id": 7}
        assert message["sender"] is None


async def test_a_publish_without_an_event_has_event_null() -> None:
    async with api_server() as router, connect(router) as alice:
        await alice.subscribe("project:12")
        await http_request(router, "POST", "/api/publish", api_key=KEY,
                           body={"room": "project:12", "data": [1, 2]})
        message = await alice.recv_type("message")
        assert message["event"] is None
        assert message["data"] == [1, 2]


async def test_http_and_websocket_publishes_share_the_rooms_offsets() -> None:
    async with api_server() as router, connect(router) as alice:
        await alice.subscribe("project:12")
        assert (await alice.publish("project:12", "ws"))["offset"] == 1
        response = await http_request(router, "POST", "/api/publish", api_key=KEY,
                                      body={"room": "project:12", "data": "http"})
        assert response.json()["offset"] == 2


async def test_a_repeated_idempotency_key_is_not_delivered_again() -> None:
    async with api_server() as router, connect(router) as alice:
        await alice.subscribe("project:12")
        body = {"room": "project:12", "data": "once", "idempotency_key": "retry-1"}
        first = await http_request(router, "POST", "/api/publish", api_key=KEY, body=body)
        again = await http_request(router, "POST", "/api/publish", api_key=KEY, body=body)
        epoch = first.json()["epoch"]
        assert first.json() == {"offset": 1, "epoch": epoch, "duplicate": False}
        assert again.json() == {"offset": 1, "epoch": epoch, "duplicate": True}
        await http_request(router, "POST", "/api/publish", api_key=KEY,
                           body={"room": "project:12", "data": "next"})
        assert (await alice.recv_type("message"))["data"] == "once"
        assert (await alice.recv_type("message"))["data"] == "next"  # no second "once"


BAD_PUBLISH_BODIES = [
    pytest.param(b"{not json", id="bad-json"),
    pytest.param(b"", id="empty"),
    pytest.param(b"[1, 2]", id="not-an-object"),
    pytest.param({"data": 1}, id="no-room"),
    pytest.param({"room": "project:1"}, id="no-data"),
    pytest.param({"room": 12, "data": 1}, id="room-not-a-string"),
    pytest.param({"room": "no spaces allowed", "data": 1}, id="bad-room-name"),
    pytest.param({"room": "x" * 201, "data": 1}, id="room-too-long"),
    pytest.param({"room": "project:1", "data": 1, "event": 5}, id="event-not-a-string"),
    pytest.param({"room": "project:1", "data": 1, "idempotency_key": "k" * 65},
                 id="idempotency-key-too-long"),
]


@pytest.mark.parametrize("body", BAD_PUBLISH_BODIES)
async def test_a_bad_publish_body_gets_400_and_publishes_nothing(body: Any) -> None:
    async with api_server() as router:
        response = await http_request(router, "POST", "/api/publish", api_key=KEY, body=body)
        assert response.status == 400, response
        answer = response.json()
        assert answer["error"] == "bad_request"
        assert "send a JSON object" in answer["message"] or "room" in answer["message"]
        assert router.metrics.publishes == 0


async def test_a_body_over_max_message_bytes_gets_413() -> None:
    async with api_server(max_message_bytes=1024) as router:
        body = {"room": "project:1", "data": "x" * 2000}
        response = await http_request(router, "POST", "/api/publish", api_key=KEY, body=body)
        assert response.status == 413
        assert response.json()["error"] == "too_large"
        assert router.metrics.publishes == 0


async def test_unknown_fields_in_a_body_are_ignored() -> None:
    async with api_server() as router:
        response = await http_request(router, "POST", "/api/publish", api_key=KEY,
                                      body={"room": "project:1", "data": 1, "extra": True})
        assert response.status == 200


async def test_a_broadcast_reaches_every_room_and_reports_each_offset() -> None:
    async with api_server() as router, connect(router, sub="alice") as alice, \
            connect(router, sub="bob") as bob:
        await http_request(router, "POST", "/api/publish", api_key=KEY,
                           body={"room": "project:2", "data": "earlier"})
        await alice.subscribe("project:1")
        await bob.subscribe("project:2")
        response = await http_request(router, "POST", "/api/broadcast", api_key=KEY, body={
            "rooms": ["project:1", "project:2"], "event": "notice", "data": {"text": "hi"}})
        assert response.status == 200
        answer = response.json()
        assert answer["offsets"] == {"project:1": 1, "project:2": 2}
        assert set(answer["epochs"]) == {"project:1", "project:2"}  # contract §17
        assert all(isinstance(epoch, str) and epoch for epoch in answer["epochs"].values())
        for client, room, offset in ((alice, "project:1", 1), (bob, "project:2", 2)):
            message = await client.recv_type("message")
            assert (message["room"], message["offset"]) == (room, offset)
            assert message["data"] == {"text": "hi"}
            assert message["event"] == "notice"
            assert message["sender"] is None


@pytest.mark.parametrize("body", [
    pytest.param({"rooms": [], "data": 1}, id="no-rooms"),
    pytest.param({"rooms": "project:1", "data": 1}, id="rooms-not-a-list"),
    pytest.param({"rooms": ["project:1", "bad room"], "data": 1}, id="one-bad-room"),
    pytest.param({"rooms": ["project:1"]}, id="no-data"),
])
async def test_a_bad_broadcast_gets_400_and_publishes_nothing(body: Any) -> None:
    async with api_server() as router:
        response = await http_request(router, "POST", "/api/broadcast", api_key=KEY, body=body)
        assert response.status == 400, response
        assert response.json()["error"] == "bad_request"
        assert router.metrics.publishes == 0


async def test_a_client_that_leaves_mid_body_is_not_a_server_error() -> None:
    async with api_server() as router:
        stream = await trio.open_tcp_stream("127.0.0.1", router.http_port)
        await stream.send_all(
            b"POST /api/publish HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + KEY.encode()
            + b"\r\ncontent-length: 100\r\n\r\n{\"room\": \"pro")
        await stream.aclose()
        with trio.fail_after(WAIT):  # nothing to await: watch the request tally settle
            while True:
                if any(path == "/api/publish" for path, _ in await _tally(router)):
                    break
                await trio.sleep(0.01)
        assert router.metrics.handler_errors == 0
        assert router.metrics.publishes == 0
        ok = await http_request(router, "POST", "/api/publish", api_key=KEY,
                                body={"room": "project:1", "data": 1})
        assert ok.status == 200



async def _tally(router: Any) -> list[tuple[str, int]]:
    """(path, status) of every HTTP request the server has answered, from /metrics."""
    text = (await http_request(router, "GET", "/metrics")).body.decode()
    return [(sample.labels["path"], int(sample.labels["status"]))
            for family in text_string_to_metric_families(text)
            if family.name == "roomcast_http_requests"
            for sample in family.samples if sample.name == "roomcast_http_requests_total"]
