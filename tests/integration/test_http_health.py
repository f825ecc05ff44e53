"""The HTTP listener's health and readiness endpoints, errors for unknown routes, and the
static files (contract §8)."""

from __future__ import annotations

from importlib import resources

import pytest
import trio

from tests.support import connect, free_port, http_request, running_server


async def test_healthz_answers_ok() -> None:
    async with running_server(http_port=free_port()) as router:
        response = await http_request(router, "GET", "/healthz")
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"status": "ok"}


async def test_the_http_listener_uses_the_given_port() -> None:
    port = free_port()
    async with running_server(http_port=port) as router:
        assert router.http_port == port
        assert (await http_request(router, "GET", "/healthz")).status == 200


async def test_readyz_answers_ready_while_serving() -> None:
    async with running_server(http_port=free_port()) as router:
        response = await http_request(router, "GET", "/readyz")
        assert response.status == 200
        assert response.json() == {"status": "ready"}


async def test_readyz_answers_503_while_draining() -> None:
    # Two connections and a long grace: the second is closed only halfway through it,
    # so the server stays draining (HTTP still up) while we ask.
    async with running_server(http_port=free_port(), shutdown_grace=60) as router, \
            connect(router, sub="alice") as alice, connect(router, sub="bob"):
        router.shutdown()
        code, _ = await alice.closed()  # the first one connected is closed at once
        assert code == 1001
        response = await http_request(router, "GET", "/readyz")
        assert response.status == 503
        assert response.json() == {"status": "draining"}
        assert (await http_request(router, "GET", "/healthz")).status == 200


async def test_an_unknown_path_gets_a_json_404() -> None:
    async with running_server(http_port=free_port()) as router:
        response = await http_request(router, "GET", "/no/such/thing")
        assert response.status == 404
        assert response.json()["error"] == "not_found"


async def test_a_wrong_method_gets_a_json_405_naming_the_allowed_ones() -> None:
    async with running_server(http_port=free_port()) as router:
        response = await http_request(router, "POST", "/healthz", body={})
        assert response.status == 405
        assert response.json()["error"] == "method_not_allowed"
        assert "GET" in response.headers["allow"]


async def test_http_is_off_when_http_port_is_zero() -> None:
    async with running_server() as router:
        assert router.http_port is None


async def test_a_busy_http_port_fails_the_start_with_a_clear_message() -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises((OSError, BaseExceptionGroup)) as caught:
            async with running_server(http_port=port):
                pass  # pragma: no cover - the start fails
        assert "--http-port" in _all_messages(caught.value)


def _all_messages(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return " ".join(_all_messages(e) for e in exc.exceptions)
    return str(exc)


@pytest.mark.parametrize(("path", "name", "content_type"), [
    ("/", "index.html", "text/html"),
    ("/roomcast.js", "roomcast.js", "text/javascript"),
    ("/roomcast.d.ts", "roomcast.d.ts", "application/typescript"),
    ("/roomcast-react.js", "roomcast-react.js", "text/javascript"),
    ("/roomcast-react.d.ts", "roomcast-react.d.ts", "application/typescript"),
])
async def test_the_static_files_are_served_from_the_package(
        path: str, name: str, content_type: str) -> None:
    expected = (resources.files("roomcast") / "static" / name).read_bytes()
    async with running_server(http_port=free_port()) as router:
        response = await http_request(router, "GET", path)
        assert response.status == 200
        assert response.headers["content-type"].startswith(content_type)
        assert response.body == expected


async def test_the_http_port_is_closed_when_the_server_stops() -> None:
    async with running_server(http_port=free_port()) as router:
        port = router.http_port
        assert (await http_request(router, "GET", "/healthz")).status == 200
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_roomcast_json_says_where_the_websocket_listener_is() -> None:
    async with running_server(http_port=free_port(), path="/live") as router:
        response = await http_request(router, "GET", "/roomcast.json")
        assert response.status == 200
        where = response.json()
        assert where == {"ws_port": router.ws_port, "ws_path": "/live"}
        async with connect(router) as client:  # the port and path it names really serve
            assert client.connected["type"] == "connected"
