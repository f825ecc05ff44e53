"""jwt_jwks_url over real sockets (protocol §14): a key server on 127.0.0.1 that the test runs
and rotates, a real roomcast server fetching from it, real WebSocket handshakes.

The clock is a MockClock running at real speed, so time-outs still guard every wait and
`clock.jump(30)` stands for the 30 s between two refetches."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
import trio
import trio.testing
import trio_websocket
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from roomcast.codes import CloseCode
from roomcast.jwks import REFETCH_INTERVAL
from roomcast.jwks_fetch import FETCH_TIMEOUT, WAIT_FOR_KEY
from roomcast.router import Router
from tests.support import WAIT, connect, free_port, running_server, ws_url

KEY_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_C = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(rate=1.0)


class KeyServer:
    """A JWKS endpoint on 127.0.0.1: serves `keys` (kid -> private key, published as their
    public JWKs) with `status`, counts the requests it answered, can go down and up."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.status = 200
        self.hang = False  # read requests, never answer them
        self.requests = 0
        self._answered = trio.Event()
        self._scope: trio.CancelScope | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def document(self) -> bytes:
        keys = [{**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid,
                 "use": "sig", "alg": "RS256"} for kid, key in self.keys.items()]
        return json.dumps({"keys": keys}).encode()

    async def up(self, nursery: trio.Nursery) -> None:
        self._scope = await nursery.start(self._serve)

    def down(self) -> None:
        """Close the listener: a fetch now meets a refused connection."""
        assert self._scope is not None
        self._scope.cancel()

    async def _serve(self, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            task_status.started(scope)
            await trio.serve_listeners(self._answer, listeners)

    async def _answer(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            with trio.move_on_after(WAIT):
                while b"\r\n\r\n" not in head:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    head += chunk
            if self.hang:
                await trio.sleep_forever()
            body = self.document() if self.status == 200 else b'{"error": "down"}'
            await stream.send_all(
                f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            self.requests += 1
            answered, self._answered = self._answered, trio.Event()
            answered.set()

    async def wait_requests(self, count: int) -> None:
        with trio.fail_after(WAIT):
            while self.requests < count:
                await self._answered.wait()


def token(key: rsa.RSAPrivateKey, kid: str, sub: str = "alice", **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": sub, "iat": now, "exp": now + 3600, "rooms": ["*"], **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


async def first_close(router: Router, token: str) -> tuple[int | None, str | None]:
    """A handshake that succeeds, then the close that comes before any data frame."""
    async with trio_websocket.open_websocket_url(
        ws_url(router, token), connect_timeout=WAIT, disconnect_timeout=WAIT
    ) as ws:
        with trio.fail_after(WAIT):
            try:
                frame = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                return exc.reason.code, exc.reason.reason
    raise AssertionError(f"got a data frame before the close: {frame!r}")


@asynccontextmanager
async def key_server_and_router(**keys: rsa.RSAPrivateKey
                                ) -> AsyncIterator[tuple[KeyServer, Router]]:
    async with trio.open_nursery() as nursery:
        server = KeyServer()
        server.keys = dict(keys)
        await server.up(nursery)
        async with running_server(jwt_secret=None, jwt_jwks_url=server.url) as router:
            yield server, router
        nursery.cancel_scope.cancel()


async def test_a_token_signed_with_a_published_key_is_accepted() -> None:
    async with key_server_and_router(a=KEY_A) as (server, router):
        # The first handshake may meet the fetch at start still in flight: it waits for it.
        async with connect(router, token(KEY_A, "a")) as alice:
            assert alice.connected["user_id"] == "alice"
        async with connect(router, token(KEY_A, "a", sub="bob")) as bob:
            assert bob.connected["user_id"] == "bob"
        assert server.requests == 1  # fetched at start, then cached
        assert router.settings.algorithms == ("RS256",)
        forged = token(KEY_C, "a")  # names a published kid, signed with another key
        assert (await first_close(router, forged))[0] == CloseCode.UNAUTHORIZED
        assert router.metrics.auth_failures["bad_signature"] == 1


async def test_a_rotated_key_is_fetched_at_most_once_per_30_s(
        clock: trio.testing.MockClock) -> None:
    async with key_server_and_router(a=KEY_A) as (server, router):
        async with connect(router, token(KEY_A, "a")):
            pass
        server.keys = {"b": KEY_B}  # the provider rotates
        # Within 30 s of the last fetch an unknown kid is refused at once, and not fetched.
        for _ in range(3):
            code, reason = await first_close(router, token(KEY_B, "b"))
            assert code == CloseCode.UNAUTHORIZED and "key set" in (reason or "")
        assert server.requests == 1
        assert router.metrics.auth_failures["unknown_key"] == 3
        clock.jump(REFETCH_INTERVAL)
        async with connect(router, token(KEY_B, "b")) as alice:  # refetched: accepted
            assert alice.connected["user_id"] == "alice"
        assert server.requests == 2
        # Key A is gone from the set; asking for it again waits for the next 30 s.
        code, _ = await first_close(router, token(KEY_A, "a"))
        assert code == CloseCode.UNAUTHORIZED
        await first_close(router, token(KEY_C, "c"))
        assert server.requests == 2
        server.keys = {"b": KEY_B, "c": KEY_C}
        clock.jump(REFETCH_INTERVAL)
        async with connect(router, token(KEY_C, "c")):
            pass
        assert server.requests == 3


async def test_a_key_server_that_fails_leaves_the_last_good_set(
        clock: trio.testing.MockClock) -> None:
    async with key_server_and_router(a=KEY_A) as (server, router):
        async with connect(router, token(KEY_A, "a")):
            pass
        fetcher = router.key_fetcher
        assert fetcher is not None and fetcher.attempts == 1
        server.status = 500  # answering, but no key set
        clock.jump(REFETCH_INTERVAL)
        assert (await first_close(router, token(KEY_B, "b")))[0] == CloseCode.UNAUTHORIZED
        assert fetcher.attempts == 2 and server.requests == 2
        async with connect(router, token(KEY_A, "a")) as alice:  # the last good set
            assert alice.connected["user_id"] == "alice"
        server.down()  # not answering at all
        clock.jump(REFETCH_INTERVAL)
        assert (await first_close(router, token(KEY_B, "b")))[0] == CloseCode.UNAUTHORIZED
        assert fetcher.attempts == 3 and server.requests == 2
        async with connect(router, token(KEY_A, "a")):
            pass


async def test_until_a_set_was_ever_fetched_handshakes_are_refused_1013(
        clock: trio.testing.MockClock) -> None:
    server = KeyServer()  # not up yet: nothing listens on its port
    server.keys = {"a": KEY_A}
    async with running_server(jwt_secret=None, jwt_jwks_url=server.url) as router:
        code, reason = await first_close(router, token(KEY_A, "a"))
        assert code == CloseCode.TRY_AGAIN_LATER
        assert "try again later" in (reason or "")
        assert router.metrics.auth_failures["keys_unavailable"] == 1
        # A handshake without a token is refused as before.
        code, _ = await first_close(router, "")
        assert code == CloseCode.UNAUTHORIZED
        async with trio.open_nursery() as nursery:
            await server.up(nursery)
            clock.jump(REFETCH_INTERVAL)  # past the pause before the next try
            await server.wait_requests(1)
            async with connect(router, token(KEY_A, "a")) as alice:
                assert alice.connected["user_id"] == "alice"
            nursery.cancel_scope.cancel()


async def test_a_handshake_waits_at_most_2_s_for_a_key_server_that_hangs(
        clock: trio.testing.MockClock) -> None:
    async with key_server_and_router(a=KEY_A) as (server, router):
        async with connect(router, token(KEY_A, "a")):
            pass
        server.hang = True
        clock.jump(REFETCH_INTERVAL)
        start = trio.current_time()
        assert (await first_close(router, token(KEY_B, "b")))[0] == CloseCode.UNAUTHORIZED
        waited = trio.current_time() - start
        assert WAIT_FOR_KEY <= waited < FETCH_TIMEOUT
        async with connect(router, token(KEY_A, "a")):  # the set in hand keeps working
            pass
        fetcher = router.key_fetcher
        assert fetcher is not None and fetcher.attempts == 2
