"""Everything under /api/ needs `Authorization: Bearer <api_key>` (contract §8)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import free_port, http_request, running_server

KEY = "test-api-key-0123456789"

# One valid request per endpoint: only the key decides whether it is answered.
ENDPOINTS: list[tuple[str, str, Any]] = [
    ("POST", "/api/publish", {"room": "project:1", "data": {"n": 1}}),
    ("POST", "/api/broadcast", {"rooms": ["project:1"], "data": 1}),
    ("POST", "/api/disconnect", {"user_id": "alice"}),
    ("POST", "/api/revoke", {"jti": "some-token-id"}),
    ("GET", "/api/presence?room=project:1", None),
    ("GET", "/api/history?room=project:1", None),
    ("GET", "/api/stats", None),
]
IDS = [path.split("?")[0] for _, path, _ in ENDPOINTS]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=IDS)
async def test_the_right_key_is_answered(method: str, path: str, body: Any) -> None:
    async with running_server(http_port=free_port(), api_key=KEY) as router:
        response = await http_request(router, method, path, body=body, api_key=KEY)
        assert response.status == 200, response


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=IDS)
async def test_a_wrong_key_gets_401(method: str, path: str, body: Any) -> None:
    async with running_server(http_port=free_port(), api_key=KEY) as router:
        response = await http_request(router, method, path, body=body, api_key=KEY + "x")
        assert response.status == 401
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=IDS)
async def test_a_missing_key_gets_401(method: str, path: str, body: Any) -> None:
    async with running_server(http_port=free_port(), api_key=KEY) as router:
        response = await http_request(router, method, path, body=body)
        assert response.status == 401
        assert "Authorization: Bearer" in response.json()["message"]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=IDS)
async def test_without_a_configured_key_everybody_gets_401(
        method: str, path: str, body: Any) -> None:
    async with running_server(http_port=free_port()) as router:
        for key in (None, "anything", KEY):
            response = await http_request(router, method, path, body=body, api_key=key)
            assert response.status == 401
            assert "api_key" in response.json()["message"]


async def test_a_key_sent_with_another_scheme_gets_401() -> None:
    async with running_server(http_port=free_port(), api_key=KEY) as router:
        response = await http_request(router, "GET", "/api/stats",
                                      headers={"authorization": f"Basic {KEY}"})
        assert response.status == 401


async def test_a_rejected_publish_publishes_nothing() -> None:
    async with running_server(http_port=free_port(), api_key=KEY) as router:
        body = {"room": "project:1", "data": 1}
        await http_request(router, "POST", "/api/publish", body=body, api_key="wrong")
        assert router.metrics.publishes == 0
        response = await http_request(router, "POST", "/api/publish", body=body, api_key=KEY)
        assert response.json()["offset"] == 1


async def test_health_and_metrics_need_no_key() -> None:
    async with running_server(http_port=free_port(), api_key=KEY) as router:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await http_request(router, "GET", path)).status == 200
