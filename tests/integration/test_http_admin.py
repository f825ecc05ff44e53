"""POST /api/disconnect and /api/revoke, seen by real WebSocket clients (contract §8)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support import connect, free_port, http_request, make_token, running_server

KEY = "test-api-key-0123456789"


def api_server(**overrides: Any) -> Any:
    return running_server(http_port=free_port(), api_key=KEY, **overrides)


async def post(router: Any, path: str, body: Any) -> Any:
    return await http_request(router, "POST", path, api_key=KEY, body=body)


async def test_disconnect_closes_every_connection_of_the_user_with_the_code_given() -> None:
    async with api_server() as router, connect(router, sub="alice") as one, \
            connect(router, sub="alice") as two, connect(router, sub="bob") as bob:
        response = await post(router, "/api/disconnect",
                              {"user_id": "alice", "code": 4403, "reason": "account disabled"})
        assert response.status == 200
        assert response.json() == {"closed": 2}
        assert await one.closed() == (4403, "account disabled")
        assert await two.closed() == (4403, "account disabled")
        assert (await bob.call({"type": "ping", "id": 1}))["type"] == "pong"


async def test_disconnect_without_a_code_closes_with_1000() -> None:
    async with api_server() as router, connect(router, sub="alice") as alice:
        response = await post(router, "/api/disconnect", {"user_id": "alice"})
        assert response.json() == {"closed": 1}
        code, _ = await alice.closed()
        assert code == 1000


async def test_disconnect_of_a_user_not_connected_closes_nothing() -> None:
    async with api_server() as router, connect(router, sub="alice") as alice:
        response = await post(router, "/api/disconnect", {"user_id": "nobody"})
        assert response.json() == {"closed": 0}
        assert (await alice.call({"type": "ping", "id": 1}))["type"] == "pong"


@pytest.mark.parametrize("body", [
    pytest.param({"user_id": "alice", "code": 1001}, id="code-1001"),
    pytest.param({"user_id": "alice", "code": 3000}, id="code-3000"),
    pytest.param({"user_id": "alice", "code": 5000}, id="code-5000"),
    pytest.param({"user_id": "alice", "code": "4403"}, id="code-a-string"),
    pytest.param({"user_id": "alice", "reason": "é" * 61}, id="reason-over-120-bytes"),
    pytest.param({"user_id": ""}, id="empty-user-id"),
    pytest.param({"code": 4403}, id="no-user-id"),
])
async def test_a_bad_disconnect_gets_400_and_closes_nothing(body: Any) -> None:
    async with api_server() as router, connect(router, sub="alice") as alice:
        response = await post(router, "/api/disconnect", body)
        assert response.status == 400, response
        assert response.json()["error"] == "bad_request"
        assert (await alice.call({"type": "ping", "id": 1}))["type"] == "pong"


def token_with_jti(jti: str, sub: str = "alice") -> str:
    return make_token(sub, rooms=["*"], publish=["*"], jti=jti)


async def test_revoke_closes_the_connections_holding_that_token_with_4401() -> None:
    async with api_server() as router, \
            connect(router, token_with_jti("t-1")) as revoked, \
            connect(router, token_with_jti("t-2")) as other:
        response = await post(router, "/api/revoke", {"jti": "t-1"})
        assert response.status == 200
        assert response.json() == {"revoked": "t-1"}
        code, _ = await revoked.closed()
        assert code == 4401
        assert (await other.call({"type": "ping", "id": 1}))["type"] == "pong"


async def test_a_revoked_token_is_refused_afterwards() -> None:
    async with api_server() as router:
        await post(router, "/api/revoke", {"jti": "t-1"})
        async with connect(router, token_with_jti("t-1"), expect_connected=False) as client:
            code, _ = await client.closed()
            assert code == 4401
        async with connect(router, token_with_jti("t-2")) as fine:
            assert fine.connected["user_id"] == "alice"


@pytest.mark.parametrize("expires_at", [
    pytest.param(int(time.time()) + 3600, id="unix-seconds"),
    pytest.param(time.time() + 3600.5, id="unix-seconds-fraction"),
    pytest.param(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)),
                 id="iso-8601-z"),
    pytest.param(time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3600)),
                 id="iso-8601-offset"),
])
async def test_revoke_accepts_expires_at_as_unix_seconds_or_iso_8601(expires_at: Any) -> None:
    async with api_server() as router:
        response = await post(router, "/api/revoke", {"jti": "t-1", "expires_at": expires_at})
        assert response.status == 200, response
        async with connect(router, token_with_jti("t-1"), expect_connected=False) as client:
            code, _ = await client.closed()
            assert code == 4401


@pytest.mark.parametrize("body", [
    pytest.param({"jti": "t-1", "expires_at": "tomorrow"}, id="expires-at-not-a-time"),
    pytest.param({"jti": "t-1", "expires_at": True}, id="expires-at-a-bool"),
    pytest.param({"jti": ""}, id="empty-jti"),
    pytest.param({"jti": 7}, id="jti-not-a-string"),
    pytest.param({}, id="no-jti"),
])
async def test_a_bad_revoke_gets_400_and_revokes_nothing(body: Any) -> None:
    async with api_server() as router, connect(router, token_with_jti("t-1")) as client:
        response = await post(router, "/api/revoke", body)
        assert response.status == 400, response
        assert response.json()["error"] == "bad_request"
        assert (await client.call({"type": "ping", "id": 1}))["type"] == "pong"
