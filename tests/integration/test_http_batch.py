"""POST /api/batch (contract §15): commands run in order, one reply each, a bad command
answered on its own, seen by real WebSocket subscribers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import connect, free_port, http_request, running_server

KEY = "test-api-key-0123456789"


def api_server(**overrides: Any) -> Any:
    return running_server(http_port=free_port(), api_key=KEY, **overrides)


def publish(room: str, data: Any, **extra: Any) -> dict[str, Any]:
    return {"method": "publish", "params": {"room": room, "data": data, **extra}}


async def batch(router: Any, commands: Any) -> Any:
    response = await http_request(router, "POST", "/api/batch", api_key=KEY,
                                  body={"commands": commands})
    assert response.status == 200, response
    return response.json()["replies"]


async def test_publishes_of_one_batch_take_consecutive_offsets_in_order() -> None:
    async with api_server() as router, connect(router) as alice:
        await alice.subscribe("project:1")
        await alice.publish("project:1", "before")
        replies = await batch(router, [publish("project:1", n) for n in range(100)])
        assert [r["result"]["offset"] for r in replies] == list(range(2, 102))
        assert len({r["result"]["epoch"] for r in replies}) == 1
        assert not any(r["result"]["duplicate"] for r in replies)
        got = [(await alice.recv_type("message"))["offset"] for _ in range(100)]
        assert got == list(range(2, 102))


async def test_every_method_answers_as_its_single_endpoint() -> None:
    async with api_server(node="n-1") as router, connect(router, sub="alice") as alice:
        await alice.subscribe("project:1")
        replies = await batch(router, [
            publish("project:1", {"n": 1}, event="e"),
            {"method": "broadcast", "params": {"rooms": ["project:1", "project:2"], "data": 2}},
            {"method": "history", "params": {"room": "project:1", "since": 0}},
            {"method": "presence", "params": {"room": "project:1"}},
            {"method": "stats"},
            {"method": "revoke", "params": {"jti": "t-1", "expires_at": 1767225600}},
            {"method": "disconnect", "params": {"user_id": "bob"}},
        ])
        results = [reply["result"] for reply in replies]
        assert results[0]["offset"] == 1
        assert results[1]["offsets"] == {"project:1": 2, "project:2": 1}
        assert set(results[1]["epochs"]) == {"project:1", "project:2"}
        single = await http_request(router, "GET", "/api/history?room=project:1&since=0",
                                    api_key=KEY)
        assert results[2] == single.json()
        assert [m["data"] for m in results[2]["messages"]] == [{"n": 1}, 2]
        assert [u["user_id"] for u in results[3]["users"]] == ["alice"]
        assert results[4]["node"] == "n-1"
        assert results[4]["connections"] == 1
        assert results[5] == {"revoked": "t-1"}
        assert results[6] == {"closed": 0}


async def test_a_bad_command_gets_its_error_and_the_others_are_done() -> None:
    async with api_server() as router, connect(router) as alice:
        await alice.subscribe("project:1")
        replies = await batch(router, [
            publish("project:1", "first"),
            publish("bad room", "never"),
            {"method": "publish", "params": {"room": "project:1"}},
            {"method": "no_such_method", "params": {}},
            {"method": "publish", "params": [1, 2]},
            {"method": "disconnect", "params": {"user_id": "bob", "code": 1006}},
            publish("project:1", "second"),
        ])
        assert replies[0]["result"]["offset"] == 1
        for reply in replies[1:6]:
            assert set(reply) == {"error"}
            assert reply["error"]["error"] == "bad_request"
            assert len(reply["error"]["message"]) > 20
        assert "room" in replies[1]["error"]["message"]
        assert "data" in replies[2]["error"]["message"]
        assert "publish" in replies[3]["error"]["message"]  # names the methods there are
        assert replies[6]["result"]["offset"] == 2
        assert (await alice.recv_type("message"))["data"] == "first"
        assert (await alice.recv_type("message"))["data"] == "second"


async def test_idempotency_keys_hold_inside_a_batch() -> None:
    async with api_server() as router:
        replies = await batch(router, [publish("project:1", n, idempotency_key="k")
                                       for n in range(3)])
        assert [(r["result"]["offset"], r["result"]["duplicate"]) for r in replies] == [
            (1, False), (1, True), (1, True)]


@pytest.mark.parametrize("body", [
    pytest.param(b"[]", id="not-an-object"),
    pytest.param(b"{", id="bad-json"),
    pytest.param(b"", id="empty"),
    pytest.param({"commands": []}, id="no-commands"),
    pytest.param({"commands": [publish("project:1", 1)] * 1001}, id="too-many"),
    pytest.param({"commands": [{"params": {}}]}, id="command-without-method"),
    pytest.param({"commands": "publish"}, id="commands-not-a-list"),
])
async def test_a_body_that_is_not_a_batch_gets_400_as_a_whole(body: Any) -> None:
    async with api_server() as router:
        response = await http_request(router, "POST", "/api/batch", api_key=KEY, body=body)
        assert response.status == 400, response
        assert response.json()["error"] == "bad_request"
        assert "commands" in response.json()["message"]
        assert router.metrics.publishes == 0


async def test_a_batch_needs_the_api_key() -> None:
    async with api_server() as router:
        response = await http_request(router, "POST", "/api/batch", api_key="wrong",
                                      body={"commands": [publish("project:1", 1)]})
        assert response.status == 401
        assert router.metrics.publishes == 0


async def test_a_thousand_commands_fit_in_one_batch() -> None:
    async with api_server() as router:
        replies = await batch(router, [publish(f"project:{n % 10}", n) for n in range(1000)])
        assert len(replies) == 1000
        assert router.metrics.publishes == 1000


async def test_commands_past_the_answer_limit_are_not_run_and_say_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from roomcast import httpops

    monkeypatch.setattr(httpops, "MAX_BATCH_ANSWER_BYTES", 1000)
    async with api_server() as router:
        for n in range(20):
            await router.publish("project:1", {"n": n, "pad": "x" * 50})
        replies = await batch(router, [
            {"method": "history", "params": {"room": "project:1"}},
            publish("project:1", "not run"),
            {"method": "stats"},
        ])
        assert len(replies[0]["result"]["messages"]) == 20
        for reply in replies[1:]:
            assert reply["error"]["error"] == "too_large"
            assert "another batch" in reply["error"]["message"]
        assert router.metrics.publishes == 20


async def test_a_batch_may_be_longer_than_max_message_bytes_with_the_key() -> None:
    async with api_server(max_message_bytes=1024) as router:
        commands = [publish("project:1", "x" * 100) for _ in range(30)]  # ~4 KiB
        assert len(replies := await batch(router, commands)) == 30
        assert all("result" in reply for reply in replies)
        single = await http_request(router, "POST", "/api/publish", api_key=KEY,
                                    body={"room": "project:1", "data": "x" * 2000})
        assert single.status == 413  # the other endpoints keep max_message_bytes


async def test_a_long_batch_without_the_key_is_refused_before_its_body_is_read() -> None:
    import trio

    async with api_server(max_message_bytes=1024) as router:
        stream = await trio.open_tcp_stream("127.0.0.1", router.http_port)
        async with stream:
            await stream.send_all(b"POST /api/batch HTTP/1.1\r\nHost: x\r\n"
                                  b"Authorization: Bearer wrong\r\n"
                                  b"Content-Length: 1000000\r\n\r\n")  # no body follows
            answer = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some(65536):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 401 ")
        assert b"Connection: close" in answer
