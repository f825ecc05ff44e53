"""Token expiry and `refresh` over real sockets (protocol §2 jwt_leeway, §4 refresh, §7 4401).

Real time with tokens that live 1-3 seconds: every wait is for an event (a close, a reply),
and every check on when a close happened has a generous upper margin for a busy machine.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import jwt

from tests.support import SECRET, Client, connect, make_token, running_server

EARLY = 0.05  # how far before the deadline a close may be seen (clock rounding only)
LATE = 5.0  # how far after it a close may come on a loaded machine


def token_until(exp: float, sub: str = "alice", secret: str = SECRET, **claims: Any) -> str:
    """A token for `sub` that expires at unix time `exp` (fractions allowed)."""
    body = {"sub": sub, "exp": exp, "rooms": ["*"], "publish": ["*"], **claims}
    return jwt.encode(body, secret, algorithm="HS256")


def iso_seconds(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def closed_at(client: Client, deadline: float) -> tuple[int | None, float]:
    """Wait for the server to close the connection (at most LATE after `deadline`);
    return the close code and the unix time it was seen."""
    code, _reason = await client.closed(timeout=deadline - time.time() + LATE)
    return code, time.time()


async def test_a_connection_is_closed_with_4401_when_its_token_expires() -> None:
    async with running_server() as router:
        exp = time.time() + 1.5
        async with connect(router, token_until(exp)) as alice:
            code, when = await closed_at(alice, exp)
        assert code == 4401
        assert when >= exp - EARLY


async def test_jwt_leeway_delays_the_expiry_close() -> None:
    leeway = 2.0
    async with running_server(jwt_leeway=leeway) as router:
        exp = time.time() + 0.5
        async with connect(router, token_until(exp)) as alice:
            code, when = await closed_at(alice, exp + leeway)
        assert code == 4401
        assert when >= exp + leeway - EARLY


async def test_jwt_leeway_admits_a_token_just_past_its_exp() -> None:
    async with running_server(jwt_leeway=3.0) as router:
        exp = time.time() - 1.0
        async with connect(router, token_until(exp)) as alice:
            pong = await alice.call({"type": "ping", "id": 1})
            assert pong["type"] == "pong"
            code, when = await closed_at(alice, exp + 3.0)
        assert code == 4401 and when >= exp + 3.0 - EARLY


async def test_refresh_answers_refreshed_with_the_new_exp_as_iso_time() -> None:
    async with running_server() as router:
        async with connect(router, token_until(time.time() + 60)) as alice:
            new_exp = int(time.time()) + 3600
            reply = await alice.call(
                {"type": "refresh", "id": 7, "token": token_until(new_exp)}
            )
        assert reply == {"type": "refreshed", "id": 7, "expires_at": iso_seconds(new_exp)}


async def test_a_refreshed_connection_outlives_its_old_token() -> None:
    async with running_server() as router:
        old = token_until(time.time() + 1.5)
        async with connect(router, old) as alice, connect(router, old) as twin:
            reply = await alice.call(
                {"type": "refresh", "id": 1, "token": token_until(time.time() + 3600)}
            )
            assert reply["type"] == "refreshed"
            code, _ = await closed_at(twin, time.time() + 1.5)
            assert code == 4401  # the old token's deadline has come and gone
            pong = await alice.call({"type": "ping", "id": 2})
            assert pong["type"] == "pong"


async def test_a_refreshed_connection_is_closed_at_the_new_exp() -> None:
    async with running_server() as router:
        first_exp = time.time() + 1.0
        async with connect(router, token_until(first_exp)) as alice:
            new_exp = first_exp + 1.5
            reply = await alice.call({"type": "refresh", "id": 1, "token": token_until(new_exp)})
            assert reply["type"] == "refreshed"
            code, when = await closed_at(alice, new_exp)
        assert code == 4401
        assert when >= new_exp - EARLY


async def test_refresh_with_a_token_for_another_user_is_forbidden_and_changes_nothing() -> None:
    async with running_server() as router:
        exp = time.time() + 1.5
        mine = token_until(exp, rooms=["project:*"])
        async with connect(router, mine) as alice:
            theirs = token_until(time.time() + 3600, sub="bob", rooms=["*"])
            reply = await alice.call({"type": "refresh", "id": 3, "token": theirs})
            assert reply["type"] == "error" and reply["code"] == "forbidden"
            assert reply["id"] == 3
            sub = await alice.subscribe("secret:1")
            assert sub["rooms"]["secret:1"] == {"ok": False, "error": "forbidden"}
            code, when = await closed_at(alice, exp)
        assert code == 4401 and when >= exp - EARLY


async def test_refresh_with_an_invalid_token_is_forbidden_and_changes_nothing() -> None:
    invalid = {
        "garbage": "not-a-jwt",
        "wrong secret": token_until(time.time() + 3600, secret="another-secret-" + "x" * 32),
        "expired": token_until(time.time() - 60),
        "no sub": jwt.encode({"exp": time.time() + 3600}, SECRET, algorithm="HS256"),
    }
    async with running_server() as router, AsyncExitStack() as stack:
        exp = time.time() + 1.5
        clients = {why: await stack.enter_async_context(connect(router, token_until(exp)))
                   for why in invalid}
        for why, bad in invalid.items():
            reply = await clients[why].call({"type": "refresh", "id": why, "token": bad})
            assert reply["type"] == "error", why
            assert reply["code"] == "forbidden", why
            assert bad not in reply["message"]  # a token is never echoed back
        for why, client in clients.items():
            code, when = await closed_at(client, exp)
            assert code == 4401 and when >= exp - EARLY, why


async def test_a_refresh_applies_the_new_tokens_permissions() -> None:
    async with running_server() as router:
        narrow = make_token("alice", rooms=["project:*"], publish=[])
        async with connect(router, narrow) as alice:
            wide = make_token("alice", rooms=["project:*", "secret:*"], publish=["secret:*"])
            assert (await alice.call({"type": "refresh", "id": 1, "token": wide}))["type"] == (
                "refreshed"
            )
            sub = await alice.subscribe("secret:1")
            assert sub["rooms"]["secret:1"]["ok"] is True
            published = await alice.publish("secret:1", "now allowed")
            assert published["type"] == "published"
