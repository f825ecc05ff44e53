"""Connecting and authenticating (contract §1, §2) over real sockets."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

import pytest
import trio
import trio_websocket

from tests.support import SECRET, WAIT, connect, make_token, running_server, ws_url

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


async def first_close(url: str, headers: list[tuple[bytes, bytes]] | None = None
                      ) -> tuple[int | None, str | None]:
    """Open a WebSocket (the handshake must succeed) and return the close that comes before
    any data frame."""
    async with trio_websocket.open_websocket_url(
        url, extra_headers=headers, connect_timeout=WAIT, disconnect_timeout=WAIT
    ) as ws:
        with trio.fail_after(WAIT):
            try:
                frame = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                return exc.reason.code, exc.reason.reason
        raise AssertionError(f"got a data frame before the close: {frame!r}")


async def http_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes on a TCP connection and read everything until the server closes it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        if request:
            await stream.send_all(request)
        received = b""
        with trio.fail_after(WAIT):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


# ------------------------------------------------------------------ token transport
async def test_a_token_in_the_query_string_connects() -> None:
    async with running_server() as router, connect(router, make_token("alice")) as client:
        assert client.connected["user_id"] == "alice"


async def test_a_token_in_an_authorization_bearer_header_connects() -> None:
    async with running_server() as router:
        token = make_token("bob")
        async with trio_websocket.open_websocket_url(
            ws_url(router), extra_headers=[(b"Authorization", f"Bearer {token}".encode())],
            connect_timeout=WAIT, disconnect_timeout=WAIT,
        ) as ws:
            with trio.fail_after(WAIT):
                frame = json.loads(await ws.get_message())
        assert frame["type"] == "connected"
        assert frame["user_id"] == "bob"


async def test_the_first_frame_is_connected_with_every_contract_field() -> None:
    overrides = {"heartbeat_interval": 7.5, "heartbeat_timeout": 30, "max_message_bytes": 4096,
                 "rate_per_second": 3, "rate_burst": 6, "node": "n1"}
    async with running_server(**overrides) as router, connect(router) as client:
        frame = client.connected
    for key in ["type", "connection_id", "user_id", "node", "heartbeat", "limits",
                "server_time"]:
        assert key in frame, key
    assert frame["type"] == "connected"
    assert isinstance(frame["connection_id"], str) and frame["connection_id"]
    assert frame["user_id"] == "alice"
    assert frame["node"] == "n1"
    assert frame["heartbeat"] == {"interval": 7.5, "timeout": 30}
    assert frame["limits"] == {"max_message_bytes": 4096, "rate_per_second": 3,
                               "rate_burst": 6}
    assert ISO_Z.fullmatch(frame["server_time"]), frame["server_time"]
    server_time = datetime.fromisoformat(frame["server_time"].replace("Z", "+00:00"))
    assert abs(server_time.timestamp() - time.time()) < 60
    assert server_time.tzinfo == UTC


async def test_every_connection_gets_its_own_connection_id() -> None:
    async with running_server() as router, connect(router) as a, connect(router) as b:
        assert a.connected["connection_id"] != b.connected["connection_id"]


# ------------------------------------------------------------------ refused tokens: 4401
async def test_a_missing_token_is_closed_4401_without_a_data_frame() -> None:
    async with running_server() as router:
        code, _ = await first_close(ws_url(router))
    assert code == 4401


async def test_a_bearer_header_of_another_scheme_is_a_missing_token() -> None:
    async with running_server() as router:
        code, _ = await first_close(ws_url(router), [(b"Authorization", b"Basic YWxpY2U6eA==")])
    assert code == 4401


@pytest.mark.parametrize("token", ["garbage", "a.b.c", ""])
async def test_a_malformed_token_is_closed_4401_without_a_data_frame(token: str) -> None:
    async with running_server() as router:
        code, reason = await first_close(ws_url(router, token))
    assert code == 4401
    assert reason is not None and len(reason.encode()) <= 120


async def test_an_expired_token_is_closed_4401_without_a_data_frame() -> None:
    async with running_server() as router:
        code, _ = await first_close(ws_url(router, make_token(ttl=-5)))
    assert code == 4401


async def test_a_not_yet_valid_token_is_closed_4401_without_a_data_frame() -> None:
    async with running_server() as router:
        token = make_token(nbf=int(time.time()) + 3600)
        code, _ = await first_close(ws_url(router, token))
    assert code == 4401


async def test_a_token_with_a_bad_signature_is_closed_4401_without_a_data_frame() -> None:
    async with running_server() as router:
        token = make_token(secret=SECRET[::-1])
        code, _ = await first_close(ws_url(router, token))
    assert code == 4401


async def test_a_revoked_token_is_closed_4401_without_a_data_frame() -> None:
    async with running_server() as router:
        await router.revoke("jti-revoked-1")
        code, _ = await first_close(ws_url(router, make_token(jti="jti-revoked-1")))
        async with connect(router, make_token(jti="jti-other")) as other:
            assert other.connected["type"] == "connected"
    assert code == 4401


async def test_a_token_without_sub_is_closed_4401() -> None:
    async with running_server() as router:
        token = make_token("")
        code, _ = await first_close(ws_url(router, token))
    assert code == 4401


# ------------------------------------------------------------------ origins
async def test_a_wrong_origin_is_refused_with_403_before_the_upgrade() -> None:
    async with running_server(allowed_origins=("https://app.example",)) as router:
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with trio_websocket.open_websocket_url(
                ws_url(router, make_token()), extra_headers=[(b"Origin", b"https://evil.example")],
                connect_timeout=WAIT, disconnect_timeout=WAIT,
            ):
                pass
    assert info.value.status_code == 403


async def test_a_listed_origin_is_accepted() -> None:
    async with running_server(allowed_origins=("https://a.example", "https://app.example")
                              ) as router, connect(
            router, headers=[("Origin", "https://app.example")]) as client:
        assert client.connected["type"] == "connected"


async def test_a_handshake_without_origin_is_accepted_when_origins_are_configured() -> None:
    async with running_server(allowed_origins=("https://app.example",)) as router, connect(
            router) as client:
        assert client.connected["type"] == "connected"


async def test_any_origin_is_accepted_when_none_are_configured() -> None:
    async with running_server() as router, connect(
            router, headers=[("Origin", "https://anything.example")]) as client:
        assert client.connected["type"] == "connected"


# ------------------------------------------------------------------ the front door
async def test_wrong_path_is_404() -> None:
    async with running_server() as router:
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with trio_websocket.open_websocket_url(
                ws_url(router, make_token(), path="/elsewhere"), connect_timeout=WAIT,
                disconnect_timeout=WAIT,
            ):
                pass
    assert info.value.status_code == 404


async def test_plain_get_healthz_on_the_websocket_port_is_200_and_closed_promptly() -> None:
    # A large handshake_timeout: an answer that waited for it would miss WAIT.
    async with running_server(handshake_timeout=60) as router:
        raw = await http_exchange(router.ws_port or 0,
                                  b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = split_response(raw)
    assert status == 200
    assert json.loads(body) == {"status": "ok"}
    assert int(headers["content-length"]) == len(body)


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    b"GET /readyz HTTP/1.0\r\n\r\n",
])
async def test_other_plain_http_on_the_websocket_port_is_426_and_closed_promptly(
    request_bytes: bytes
) -> None:
    async with running_server(handshake_timeout=60) as router:
        raw = await http_exchange(router.ws_port or 0, request_bytes)
    status, headers, _ = split_response(raw)
    assert status == 426
    assert headers.get("upgrade", "").lower() == "websocket"


async def test_an_http_1_0_healthz_is_answered_too() -> None:
    async with running_server(handshake_timeout=60) as router:
        raw = await http_exchange(router.ws_port or 0, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert split_response(raw)[0] == 200


async def test_a_silent_tcp_client_is_dropped_after_the_handshake_timeout() -> None:
    async with running_server(handshake_timeout=0.3) as router:
        start = trio.current_time()
        await http_exchange(router.ws_port or 0, b"")
        elapsed = trio.current_time() - start
    assert 0.25 <= elapsed < WAIT


async def test_a_client_that_stalls_in_the_middle_of_its_head_is_dropped() -> None:
    async with running_server(handshake_timeout=0.3) as router:
        start = trio.current_time()
        await http_exchange(router.ws_port or 0, b"GET /ws?token=x HTTP/1.1\r\nHost: x\r\n")
        elapsed = trio.current_time() - start
    assert 0.25 <= elapsed < WAIT


async def test_garbage_instead_of_a_request_is_answered_and_closed() -> None:
    async with running_server(handshake_timeout=60) as router:
        raw = await http_exchange(router.ws_port or 0, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400")


async def test_a_head_without_host_is_answered_400_saying_what_is_missing() -> None:
    async with running_server(handshake_timeout=60) as router:
        raw = await http_exchange(router.ws_port or 0, (
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body) == {"error": "bad_request",
                                "message": "an HTTP/1.1 request needs exactly one Host header"}


async def test_many_plain_requests_leave_the_server_serving_websockets() -> None:
    async with running_server(handshake_timeout=60) as router:
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(http_exchange, router.ws_port or 0,
                                   b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        async with connect(router) as client:
            assert (await client.call({"type": "ping", "id": 1}))["type"] == "pong"
