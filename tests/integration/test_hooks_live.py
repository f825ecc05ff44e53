"""Backend hooks over real sockets (contract §11): a real HTTP server in the test plays the
application — it can answer, refuse, return garbage, be slow or be gone."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from roomcast.metrics_export import registry_for, render
from tests.support import WAIT, connect, running_server

SECRET = "hook-secret-0123456789"
Answer = tuple[int, bytes]
Behaviour = Callable[[dict[str, Any]], Awaitable[Answer]]


class Application:
    """An HTTP server on 127.0.0.1 that records each hook request and answers it with
    `behaviour` (keep-alive, as httpx pools connections)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.port = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = {k.strip().lower(): v.strip()
                           for k, _, v in (line.partition(":") for line in lines[1:])}
                length = int(headers.get("content-length", "0"))
                while len(data) < length:
                    data += await stream.receive_some(65536)
                body, data = data[:length], data[length:]
                self.requests.append((headers, body))
                status, answer = await self.behaviour(json.loads(body))
                await stream.send_all(f"HTTP/1.1 {status} X\r\nContent-Type: application/json"
                                      f"\r\nContent-Length: {len(answer)}\r\n\r\n".encode()
                                      + answer)


@asynccontextmanager
async def application(behaviour: Behaviour) -> AsyncIterator[Application]:
    app = Application(behaviour)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, app.handle, 0)
        app.port = listeners[0].socket.getsockname()[1]
        yield app
        nursery.cancel_scope.cancel()


def result(value: Any) -> Answer:
    return 200, json.dumps({"result": value}).encode()


def error(code: Any, message: str) -> Answer:
    return 200, json.dumps({"error": {"code": code, "message": message}}).encode()


# ------------------------------------------------------------------ rpc
async def test_the_rpc_hook_answers_a_command_type_roomcast_does_not_know() -> None:
    async def app_logic(request: dict[str, Any]) -> Answer:
        assert request["hook"] == "rpc" and request["type"] == "request_metrics"
        return result({"data": {"executions": 42, "asked_by": request["user_id"]}})

    async with application(app_logic) as app, running_server(
            rpc_hook_url=app.url(), hook_secret=SECRET) as router, \
            connect(router, sub="alice") as alice:
        reply = await alice.call({"type": "request_metrics", "id": 9, "metric_type": "x"})
        assert reply == {"type": "request_metrics", "id": 9,
                         "data": {"executions": 42, "asked_by": "alice"}}
        headers, body = app.requests[0]
        sent = json.loads(body)
        assert sent["command"] == {"type": "request_metrics", "metric_type": "x"}  # no id
        assert sent["connection_id"] == alice.connected["connection_id"]
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-roomcast-signature"] == expected


async def test_the_rpc_hooks_error_becomes_an_error_frame_with_its_code_when_valid() -> None:
    answers = iter([error("no_such_metric", "try executions"), error("Bad Code!", "x"),
                    (404, b"{}"), (500, b"oops"), (200, b"not json")])

    async def app_logic(request: dict[str, Any]) -> Answer:
        return next(answers)

    async with application(app_logic) as app, running_server(
            rpc_hook_url=app.url()) as router, connect(router, sub="bob") as bob:
        codes = []
        for n in range(5):
            reply = await bob.call({"type": "custom_thing", "id": n})
            assert reply["type"] == "error" and reply["id"] == n
            codes.append(reply["code"])
        assert codes == ["no_such_metric", "forbidden", "unknown_type", "unavailable",
                         "unavailable"]
        assert router.hooks.outcomes[("rpc", "failed")] == 3
        text = render(registry_for(router)).decode()
        assert 'roomcast_hook_requests_total{hook="rpc",outcome="failed"} 3.0' in text
        assert 'roomcast_hook_requests_total{hook="rpc",outcome="denied"} 2.0' in text


async def test_a_slow_rpc_hook_holds_only_the_connection_that_asked() -> None:
    release = trio.Event()

    async def app_logic(request: dict[str, Any]) -> Answer:
        await release.wait()
        return result({"data": "late"})

    async with application(app_logic) as app, running_server(
            rpc_hook_url=app.url(), hook_timeout=5) as router, \
            connect(router, sub="slow") as slow, connect(router, sub="other") as other:
        await slow.send({"type": "slow_thing", "id": 1})
        with trio.fail_after(1.0):  # the other connection is served meanwhile
            for n in range(3):
                assert (await other.call({"type": "ping", "id": n}))["type"] == "pong"
        release.set()
        assert (await slow.recv_type("slow_thing"))["data"] == "late"


async def test_an_rpc_hook_that_does_not_answer_in_time_is_unavailable() -> None:
    async def app_logic(request: dict[str, Any]) -> Answer:
        await trio.sleep_forever()
        raise AssertionError

    async with application(app_logic) as app, running_server(
            rpc_hook_url=app.url(), hook_timeout=0.3) as router, connect(router) as alice:
        reply = await alice.call({"type": "whatever", "id": 1}, timeout=WAIT)
        assert reply["code"] == "unavailable"
        assert alice.connected["type"] == "connected"
        assert (await alice.call({"type": "ping", "id": 2}))["type"] == "pong"  # still open


async def test_without_an_rpc_hook_an_unknown_type_is_unknown_type() -> None:
    async with running_server() as router, connect(router) as alice:
        assert (await alice.call({"type": "whatever", "id": 1}))["code"] == "unknown_type"


async def test_a_registered_command_wins_over_the_rpc_hook() -> None:
    async def app_logic(request: dict[str, Any]) -> Answer:
        raise AssertionError("the hook must not be asked")

    async with application(app_logic) as app, running_server(
            rpc_hook_url=app.url()) as router, connect(router) as alice:
        @router.command("local_thing")
        async def local(principal: Any, payload: dict[str, Any]) -> str:
            return "here"

        assert (await alice.call({"type": "local_thing", "id": 1}))["data"] == "here"
        assert app.requests == []


# ------------------------------------------------------------------ connect
async def test_the_connect_hook_admits_a_handshake_without_a_token_by_its_cookie() -> None:
    async def app_logic(request: dict[str, Any]) -> Answer:
        assert request["hook"] == "connect"
        if request["headers"].get("cookie") != "session=abc":
            return error(4403, "no session")
        return result({"user_id": "alice", "rooms": ["project:*"], "info": {"name": "A"},
                       "subscribe": ["project:12"]})

    async with application(app_logic) as app, running_server(
            connect_hook_url=app.url(), jwt_secret=None,
            hook_headers=("cookie", "user-agent")) as router:
        async with connect(router, "", headers=[("Cookie", "session=abc")]) as alice:
            assert alice.connected["user_id"] == "alice"
            frame = await alice.recv_type("subscribed")  # the hook's `subscribe`
            assert frame["server"] is True and frame["rooms"]["project:12"]["ok"] is True
            assert (await alice.subscribe("project:7"))["rooms"]["project:7"]["ok"] is True
        sent = json.loads(app.requests[0][1])
        assert sent["headers"] == {"cookie": "session=abc"}  # only hook_headers
        assert sent["remote_addr"] == "127.0.0.1" and sent["path"] == "/ws"
        async with connect(router, "", headers=[("Cookie", "session=wrong")],
                           expect_connected=False) as stranger:
            assert await stranger.closed() == (4403, "no session")


async def test_the_connect_hooks_query_has_every_parameter_but_the_token() -> None:
    async def app_logic(request: dict[str, Any]) -> Answer:
        return result({"user_id": "q", "info": {"q": request["query"]}})

    async with application(app_logic) as app, running_server(
            connect_hook_url=app.url()) as router:
        assert router.ws_port is not None
        import trio_websocket

        async with trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{router.ws_port}/ws?workspace_id=acme") as ws:
            hello = json.loads(await ws.get_message())
            assert hello["user_id"] == "q"
        assert json.loads(app.requests[0][1])["query"] == {"workspace_id": "acme"}


async def test_a_failing_backend_refuses_with_1013_and_a_token_still_works() -> None:
    async def app_logic(request: dict[str, Any]) -> Answer:
        return 500, b"down"

    async with application(app_logic) as app, running_server(
            connect_hook_url=app.url()) as router:
        async with connect(router, "", expect_connected=False) as nobody:
            assert await nobody.closed() == (1013, "auth backend unavailable")
        async with connect(router, sub="with_token") as client:  # verified as in §2
            assert client.connected["user_id"] == "with_token"
        assert app.requests and len(app.requests) == 1


async def test_a_refusal_code_outside_4000_4999_is_taken_as_4403() -> None:
    async def app_logic(request: dict[str, Any]) -> Answer:
        return error(1000, "")

    async with application(app_logic) as app, running_server(
            connect_hook_url=app.url()) as router, \
            connect(router, "", expect_connected=False) as refused:
        assert await refused.closed() == (4403, "refused by the application")


async def test_a_hanging_connect_hook_never_slows_established_connections() -> None:
    release = trio.Event()

    async def app_logic(request: dict[str, Any]) -> Answer:
        await release.wait()
        return result({"user_id": "late"})

    async with application(app_logic) as app, running_server(
            connect_hook_url=app.url(), hook_timeout=5) as router, \
            connect(router, sub="resident") as resident, trio.open_nursery() as nursery:
        async def waiting() -> None:
            async with connect(router, "") as late:
                assert late.connected["user_id"] == "late"

        nursery.start_soon(waiting)
        with trio.fail_after(1.0):
            for n in range(5):
                assert (await resident.call({"type": "ping", "id": n}))["type"] == "pong"
        release.set()


# ------------------------------------------------------------------ subscribe
async def test_the_subscribe_hook_decides_its_rooms_and_the_token_the_others() -> None:
    async def app_logic(request: dict[str, Any]) -> Answer:
        assert request["hook"] == "subscribe" and request["user_id"] == "alice"
        room = request["room"]
        if room == "project:1":
            return result({})
        if room == "project:2":
            return error("not_a_member", "ask to join")
        if room == "project:3":
            return error("Not A Code", "x")
        return 503, b""

    async with application(app_logic) as app, running_server(
            subscribe_hook_url=app.url(), subscribe_hook_rooms=("project:*",)) as router, \
            connect(router, sub="alice", rooms=["chat:*"]) as alice:
        rooms = (await alice.subscribe("project:1", "project:2", "project:3", "project:4",
                                       "chat:1", "other:1"))["rooms"]
        assert rooms["project:1"]["ok"] is True  # allowed by the hook, not the token
        assert rooms["project:2"] == {"ok": False, "error": "not_a_member"}
        assert rooms["project:3"] == {"ok": False, "error": "forbidden"}
        assert rooms["project:4"] == {"ok": False, "error": "unavailable"}
        assert rooms["chat:1"]["ok"] is True  # the token's patterns, no hook asked
        assert rooms["other:1"] == {"ok": False, "error": "forbidden"}
        assert sorted(json.loads(b)["room"] for _, b in app.requests) == [
            "project:1", "project:2", "project:3", "project:4"]
        await router.publish("project:1", "in")
        assert (await alice.recv_type("message"))["data"] == "in"


async def test_a_slow_subscribe_hook_holds_its_other_rooms_at_most_hook_timeout() -> None:
    async def app_logic(request: dict[str, Any]) -> Answer:
        if request["room"] == "slow:1":
            await trio.sleep_forever()
        return result({})

    async with application(app_logic) as app, running_server(
            subscribe_hook_url=app.url(), subscribe_hook_rooms=("slow:*", "fast:*"),
            hook_timeout=0.5) as router, connect(router, sub="bob") as bob:
        start = trio.current_time()
        rooms = (await bob.subscribe("slow:1", "fast:1", "fast:2"))["rooms"]
        assert trio.current_time() - start < 0.5 + 1.0  # the hooks ran at once, not in turn
        assert rooms["slow:1"] == {"ok": False, "error": "unavailable"}
        assert rooms["fast:1"]["ok"] is True and rooms["fast:2"]["ok"] is True


# ------------------------------------------------------------------ publish
async def test_the_publish_hook_allows_rewrites_or_refuses() -> None:
    async def app_logic(request: dict[str, Any]) -> Answer:
        text = request["data"]["text"]
        if text == "as is":
            return result({})
        if text == "clean me":
            return result({"data": {"text": "clean"}, "event": "message.cleaned"})
        if text == "no":
            return error("spam", "looks like spam")
        return 500, b""

    async with application(app_logic) as app, running_server(
            publish_hook_url=app.url(), publish_hook_rooms=("channel:*",)) as router, \
            connect(router, sub="carol", rooms=["*"], publish=[]) as carol, \
            connect(router, sub="watcher", rooms=["*"]) as watcher:
        await watcher.subscribe("channel:1")
        first = await carol.call({"type": "publish", "id": 1, "room": "channel:1",
                                  "event": "message.new", "data": {"text": "as is"}})
        assert first["type"] == "published"  # the token may publish nowhere: the hook decides
        message = await watcher.recv_type("message")
        assert (message["event"], message["data"]) == ("message.new", {"text": "as is"})
        await carol.call({"type": "publish", "id": 2, "room": "channel:1",
                          "event": "message.new", "data": {"text": "clean me"}})
        message = await watcher.recv_type("message")
        assert (message["event"], message["data"]) == ("message.cleaned", {"text": "clean"})
        refused = await carol.call({"type": "publish", "id": 3, "room": "channel:1",
                                    "data": {"text": "no"}})
        assert (refused["code"], refused["message"]) == ("spam", "looks like spam")
        failed = await carol.call({"type": "publish", "id": 4, "room": "channel:1",
                                   "data": {"text": "x"}})
        assert failed["code"] == "unavailable"
        outside = await carol.call({"type": "publish", "id": 5, "room": "other:1", "data": 1})
        assert outside["code"] == "forbidden"  # not a hook room: the token's patterns
        assert len(app.requests) == 4
        offset = await router.publish("channel:1", {"text": "from the server"})
        assert offset == 3  # the server API never goes through the hook


# ------------------------------------------------------------------ refresh
async def test_the_refresh_hook_extends_a_connection_the_connect_hook_admitted() -> None:
    import time

    asked = trio.Event()

    async def app_logic(request: dict[str, Any]) -> Answer:
        if request["hook"] == "connect":
            return result({"user_id": "fay", "info": {"v": 1},
                           "expires_at": time.time() + 2.0})
        assert request["hook"] == "refresh" and request["user_id"] == "fay"
        assert request["info"] == {"v": 1} and request["connection_id"]
        asked.set()
        return result({"expires_at": time.time() + 60, "info": {"v": 2}})

    async with application(app_logic) as app, running_server(
            connect_hook_url=app.url(), refresh_hook_url=app.url(),
            hook_timeout=0.5) as router, connect(router, "") as fay:
        with trio.fail_after(WAIT):
            await asked.wait()  # about 1.5 s before expires_at
        await trio.sleep(1.0)  # past the first expires_at: nothing to await for "not closed"
        assert (await fay.call({"type": "ping", "id": 1}))["type"] == "pong"
        (peer,) = router.conns.values()
        assert peer.principal.info == {"v": 2}


async def test_a_refused_refresh_closes_4401_at_expires_at() -> None:
    import time

    async def app_logic(request: dict[str, Any]) -> Answer:
        if request["hook"] == "connect":
            return result({"user_id": "gil", "expires_at": time.time() + 2.0})
        return error("expired", "log in again")

    async with application(app_logic) as app, running_server(
            connect_hook_url=app.url(), refresh_hook_url=app.url(),
            hook_timeout=0.5) as router, connect(router, "") as gil:
        assert await gil.closed(timeout=WAIT) == (4401, "token expired")
        assert [json.loads(b)["hook"] for _, b in app.requests] == ["connect", "refresh"]
