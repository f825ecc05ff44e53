"""roomcast.api (the server-API SDK) against a real `roomcast serve` process: the blocking
Client from plain code, the AsyncClient under asyncio (`asyncio.run` in a plain test) and
under Trio, a retried publish delivered once, coalescing, batches and error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

from roomcast.api import (
    ApiError,
    AsyncClient,
    BadRequest,
    Client,
    ConnectionFailed,
    HistoryResult,
    PresenceResult,
    PublishResult,
    RequestTimedOut,
    Retry,
    Stats,
    Unauthorized,
)
from tests.support import WAIT, ServerProcess, TcpProxy, free_port

FAST_RETRY = Retry(attempts=3, initial=0.01, maximum=0.05)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One server process for the module; each test uses its own rooms."""
    with ServerProcess() as process:
        yield process


def api(server: ServerProcess, **options: Any) -> Client:
    return Client(server.http_url(), api_key=server.api_key, timeout=WAIT, **options)


class CountingTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, counting the requests per path it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await super().handle_async_request(request)


# ---------------------------------------------------------------- the blocking Client
def test_the_blocking_client_publishes_and_reads_history_presence_and_stats(
        server: ServerProcess) -> None:
    with api(server) as client:
        first = client.publish("sdk:basic", {"n": 1}, event="e1")
        second = client.publish("sdk:basic", {"n": 2})
        assert isinstance(first, PublishResult)
        assert (first.room, first.offset, first.duplicate) == ("sdk:basic", 1, False)
        assert second.offset == 2 and second.epoch == first.epoch is not None
        page = client.history("sdk:basic", since=0)
        assert isinstance(page, HistoryResult)
        assert [(m.offset, m.event, m.data) for m in page.messages] == [
            (1, "e1", {"n": 1}), (2, None, {"n": 2})]
        assert (page.epoch, page.offset) == (first.epoch, 2)
        assert client.presence("sdk:basic") == PresenceResult("sdk:basic", [])
        stats = client.stats()
        assert isinstance(stats, Stats) and stats.node == "proc0"
        broadcast = client.broadcast(["sdk:b1", "sdk:b2"], {"hi": True})
        assert broadcast.offsets == {"sdk:b1": 1, "sdk:b2": 1}
        assert client.disconnect("nobody") == 0
        assert client.revoke("some-jti") is None


def test_an_own_idempotency_key_makes_a_second_publish_a_duplicate(
        server: ServerProcess) -> None:
    with api(server) as client:
        first = client.publish("sdk:key", {"n": 1}, idempotency_key="order-7")
        again = client.publish("sdk:key", {"n": 1}, idempotency_key="order-7")
        assert (again.offset, again.duplicate, first.duplicate) == (first.offset, True, False)
        assert len(client.history("sdk:key", since=0).messages) == 1


def test_a_publish_whose_answer_was_lost_is_retried_and_delivered_once(
        server: ServerProcess) -> None:
    proxy = TcpProxy(server.http_port)
    try:
        with Client(f"http://127.0.0.1:{proxy.port}", api_key=server.api_key, timeout=1.0,
                    retry=FAST_RETRY) as client:
            client.stats()  # one keep-alive connection through the proxy
            proxy.hold(up=False, down=True)  # it arrives; its answer never comes back
            result = client.publish("sdk:retry", {"once": True})
        # The second try (a new connection) found the first: same offset, nothing new.
        assert (result.offset, result.duplicate) == (1, True)
        with api(server) as direct:
            page = direct.history("sdk:retry", since=0)
        assert [m.data for m in page.messages] == [{"once": True}]
    finally:
        proxy.close()


def test_a_batch_answers_each_command_in_order_and_one_bad_command_stops_nothing(
        server: ServerProcess) -> None:
    with api(server) as client:
        batch = client.batch()
        batch.publish("sdk:batch", {"n": 1})
        bad = batch.publish("bad room name with spaces", {"n": 0})
        batch.publish("sdk:batch", {"n": 2})
        batch.history("sdk:batch", since=0)
        batch.stats()
        results = batch.send()
        assert [r.offset for r in (results[0], results[2])] == [1, 2]
        assert isinstance(results[bad], BadRequest)
        assert results[bad].status == 400 and "room" in results[bad].message
        assert [m.data for m in results[3].messages] == [{"n": 1}, {"n": 2}]
        assert isinstance(results[4], Stats)
        with pytest.raises(ValueError, match="empty batch"):
            client.batch().send()


class CountingSyncTransport(httpx.HTTPTransport):
    """httpx's own blocking transport, counting the requests per path it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


def test_the_blocking_client_coalesces_publishes_from_many_threads(
        server: ServerProcess) -> None:
    from concurrent.futures import ThreadPoolExecutor

    transport = CountingSyncTransport()
    with Client(server.http_url(), api_key=server.api_key, coalesce=True, max_in_flight=1,
                transport=transport) as client, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda n: client.publish("sdk:threads", n), range(400),
                                timeout=WAIT))
        bad = pool.submit(client.publish, "bad room", 0)
        with pytest.raises(BadRequest):
            bad.result(timeout=WAIT)
    assert sorted(r.offset for r in results) == list(range(1, 401))
    assert "/api/batch" in transport.paths and len(transport.paths) < 400


# ---------------------------------------------------------------- errors
def test_a_wrong_api_key_is_unauthorized_and_says_what_to_do(server: ServerProcess) -> None:
    with Client(server.http_url(), api_key="wrong") as client, \
            pytest.raises(Unauthorized) as caught:
        client.publish("sdk:x", 1)
    assert caught.value.status == 401 and "api_key" in str(caught.value)


def test_a_bad_room_is_a_bad_request_not_retried(server: ServerProcess) -> None:
    with api(server) as client, pytest.raises(BadRequest) as caught:
        client.publish("", {"n": 1})
    assert caught.value.status == 400 and not caught.value.retriable


def test_nobody_listening_is_a_connection_failure_after_the_retries() -> None:
    port = free_port()
    with Client(f"http://127.0.0.1:{port}", api_key="k", retry=FAST_RETRY) as client, \
            pytest.raises(ConnectionFailed) as caught:
        client.stats()
    assert "base_url" in str(caught.value) and isinstance(caught.value, ApiError)


def test_no_answer_in_time_is_a_timeout_after_the_retries(server: ServerProcess) -> None:
    proxy = TcpProxy(server.http_port)
    try:
        with Client(f"http://127.0.0.1:{proxy.port}", api_key="k", timeout=0.3,
                    retry=Retry(attempts=1)) as client:
            client.stats()
            proxy.hold()
            with pytest.raises(RequestTimedOut):
                client.stats()
    finally:
        proxy.close()


def test_a_base_url_that_is_not_http_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="HTTP listener"):
        Client("ws://127.0.0.1:8000/ws")


# ---------------------------------------------------------------- server-side subscriptions
def test_server_side_subscribe_and_unsubscribe(server: ServerProcess) -> None:
    with api(server) as client:  # the server has them: a 501 here is a failure, not a skip
        assert client.subscribe("nobody", "sdk:server-side") == 0
        assert client.unsubscribe("nobody", "sdk:server-side") == 0


# ---------------------------------------------------------------- the AsyncClient
def test_the_async_client_under_asyncio_coalesces_concurrent_publishes(
        server: ServerProcess) -> None:
    async def main() -> tuple[list[PublishResult], list[str]]:
        transport = CountingTransport()
        async with AsyncClient(server.http_url(), api_key=server.api_key, coalesce=True,
                               max_in_flight=2, transport=transport) as client:
            results = await asyncio.wait_for(asyncio.gather(*[
                client.publish("sdk:coalesce", {"n": n}) for n in range(300)]), WAIT)
            page = await client.history("sdk:coalesce", limit=1000)
        # History keeps the newest 100 (history_size): the last ones, in publish order.
        assert [m.data["n"] for m in page.messages] == list(range(200, 300))
        return results, transport.paths

    results, paths = asyncio.run(main())
    assert [r.offset for r in results] == list(range(1, 301))
    assert not any(r.duplicate for r in results)
    # Many publishes per request: far fewer requests than publishes.
    assert "/api/batch" in paths and len(paths) < 50, paths


def test_a_coalesced_publish_that_fails_raises_only_for_itself(
        server: ServerProcess) -> None:
    async def main() -> list[Any]:
        async with AsyncClient(server.http_url(), api_key=server.api_key,
                               coalesce=True) as client:
            return await asyncio.gather(
                *[client.publish("sdk:mixed" if n != 3 else "bad room", n) for n in range(8)],
                return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[3], BadRequest)
    assert [r.offset for i, r in enumerate(results) if i != 3] == list(range(1, 8))


async def test_the_async_client_works_under_trio(server: ServerProcess) -> None:
    async with AsyncClient(server.http_url(), api_key=server.api_key, coalesce=True) as client:
        with trio.fail_after(WAIT):
            results: list[PublishResult] = []

            async def one(n: int) -> None:
                results.append(await client.publish("sdk:trio", {"n": n}))

            async with trio.open_nursery() as nursery:
                for n in range(20):
                    nursery.start_soon(one, n)
            batch = client.batch()
            batch.presence("sdk:trio")
            replies = await batch.send()
    assert sorted(r.offset for r in results) == list(range(1, 21))
    assert isinstance(replies[0], PresenceResult)
