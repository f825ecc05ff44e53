"""roomcast.client.aio (the asyncio client) against real `roomcast serve` processes: each
test is a plain function running `asyncio.run`, the server a child process it can kill,
restart and talk to over the HTTP API. Every wait has a time-out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from roomcast.client import (
    DEAD_LINK,
    Backoff,
    CloseInfo,
    ConnectError,
    Disconnected,
    Event,
    Joined,
    Message,
    Recovery,
    State,
    token_expiry,
)
from roomcast.client.aio import Client, connect
from tests.support import WAIT, ServerProcess, TcpProxy, free_port, make_token

FAST = Backoff(initial=0.05, factor=1.5, maximum=0.5)


def token(sub: str = "alice", **claims: Any) -> str:
    # Issued a minute ago: a server process that has run for a while anchors its wall
    # clock on the monotonic one, and a step of the system clock since then would make
    # "issued now" look like the future to it (jwt_leeway 0).
    claims.setdefault("iat", int(time.time()) - 60)
    return make_token(sub, rooms=["*"], publish=["*"], **claims)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One server for the tests that neither kill it nor need special settings."""
    with ServerProcess() as process:
        yield process


class TokenGate:
    """A token function the test can hold shut: a reconnect waits in it until opened."""

    def __init__(self, value: str) -> None:
        self.value = value
        self._open = asyncio.Event()
        self._open.set()

    def shut(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    async def __call__(self) -> str:
        await self._open.wait()
        return self.value


class States:
    """Records every state change with its close info."""

    def __init__(self) -> None:
        self.seen: list[tuple[State, CloseInfo | None]] = []

    def __call__(self, state: State, close: CloseInfo | None) -> None:
        self.seen.append((state, close))

    def codes(self, state: State) -> list[int]:
        return [close.code for s, close in self.seen if s == state and close is not None]


async def next_event(events: AsyncIterator[Event], timeout: float = WAIT) -> Event:
    async with asyncio.timeout(timeout):
        return await anext(events)


async def next_message(events: AsyncIterator[Event], timeout: float = WAIT) -> Message:
    event = await next_event(events, timeout)
    assert isinstance(event, Message), event
    return event


async def wait_state(client: Client, state: State, timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        await client.wait_state(state)


def run(main: Any) -> Any:
    """Run a test's coroutine on a fresh asyncio loop, within an overall time-out."""
    async def bounded() -> Any:
        async with asyncio.timeout(WAIT * 6):
            return await main

    return asyncio.run(bounded())


# ---------------------------------------------------------------- the basics
def test_subscribe_publish_receive_history_and_presence(server: ServerProcess) -> None:
    async def main() -> None:
        async with connect(server.ws_url(), token(), backoff=FAST) as client:
            assert client.state == State.CONNECTED and client.connection is not None
            events = client.messages()
            result = await client.subscribe("aio:1", presence=True)
            assert result["aio:1"].ok
            joined = await next_event(events)
            assert isinstance(joined, Joined) and joined.user_id == "alice"
            published = await client.publish("aio:1", {"n": 1}, event="e")
            message = await next_message(events)
            assert (message.offset, message.data, message.event) == (1, {"n": 1}, "e")
            assert (published.offset, published.duplicate) == (1, False)
            assert client.position("aio:1") == (1, published.epoch)
            page = await client.history("aio:1", since=0)
            assert [m.data for m in page.messages] == [{"n": 1}]
            assert [u.user_id for u in await client.presence("aio:1")] == ["alice"]
            assert await client.ping() >= 0
            await asyncio.to_thread(server.publish, "aio:1", {"n": 2})
            assert (await next_message(events)).offset == 2
        assert client.state == State.DISCONNECTED
        assert [e async for e in client.messages()] == []  # ends quietly after aclose

    run(main())


def test_a_refused_subscribe_is_reported_and_not_kept(server: ServerProcess) -> None:
    async def main() -> None:
        limited = make_token("bob", rooms=["aio:ok"], iat=int(time.time()) - 60)
        async with connect(server.ws_url(), limited) as client:
            result = await client.subscribe(["aio:ok", "aio:secret"])
            assert result["aio:ok"].ok
            assert (result["aio:secret"].ok, result["aio:secret"].error) == (False, "forbidden")
            assert client.subscriptions == ["aio:ok"]

    run(main())


def test_a_first_connection_refused_with_4401_raises_disconnected(
        server: ServerProcess) -> None:
    async def main() -> None:
        with pytest.raises(Disconnected) as caught:
            async with connect(server.ws_url(), make_token(secret="x" * 40)):
                pass
        assert caught.value.code == 4401

    run(main())


def test_connecting_where_nothing_listens_gives_up_after_wait() -> None:
    async def main() -> None:
        with pytest.raises(ConnectError):
            async with connect(f"ws://127.0.0.1:{free_port()}/ws", token(), wait=0.5,
                               backoff=FAST):
                pass

    run(main())


# ---------------------------------------------------------------- resume
def test_after_a_4409_the_client_resumes_with_since_and_gets_what_it_missed(
        server: ServerProcess) -> None:
    async def main() -> None:
        gate, states = TokenGate(token("carol")), States()
        async with connect(server.ws_url(), gate, backoff=FAST, on_state=states) as client:
            events = client.messages()
            await client.subscribe("aio:4409")
            for n in (1, 2, 3):
                await asyncio.to_thread(server.publish, "aio:4409", {"n": n})
            assert [(await next_message(events)).offset for _ in range(3)] == [1, 2, 3]
            gate.shut()
            status, _ = await asyncio.to_thread(
                server.api, "POST", "/api/disconnect",
                {"user_id": "carol", "code": 4409, "reason": "too slow"})
            assert status == 200
            await wait_state(client, State.RECONNECTING)
            for n in (4, 5, 6):
                await asyncio.to_thread(server.publish, "aio:4409", {"n": n})
            gate.open()
            recovery = await next_event(events)
            assert isinstance(recovery, Recovery)
            assert (recovery.recovered, recovery.since.offset, recovery.offset) == (True, 3, 6)
            replayed = [await next_message(events) for _ in range(3)]
            assert [(m.offset, m.data, m.replayed) for m in replayed] == [
                (4, {"n": 4}, True), (5, {"n": 5}, True), (6, {"n": 6}, True)]
            await asyncio.to_thread(server.publish, "aio:4409", {"n": 7})
            live = await next_message(events)
            assert (live.offset, live.replayed) == (7, False)
        assert states.codes(State.RECONNECTING) == [4409]

    run(main())


def test_a_resume_past_history_reports_the_missed_range_then_the_rest() -> None:
    async def main(server: ServerProcess) -> None:
        gate = TokenGate(token("dave"))
        async with connect(server.ws_url(), gate, backoff=FAST) as client:
            events = client.messages()
            await client.subscribe("aio:missed")
            await asyncio.to_thread(server.publish, "aio:missed", {"n": 1})
            assert (await next_message(events)).offset == 1
            gate.shut()
            await asyncio.to_thread(server.api, "POST", "/api/disconnect",
                                    {"user_id": "dave", "code": 4409})
            await wait_state(client, State.RECONNECTING)
            for n in range(2, 8):  # 6 more; history keeps only the newest 3 (5, 6, 7)
                await asyncio.to_thread(server.publish, "aio:missed", {"n": n})
            gate.open()
            recovery = await next_event(events)
            assert isinstance(recovery, Recovery)
            assert (recovery.recovered, recovery.missed, recovery.offset) == (False, (2, 4), 7)
            assert not recovery.epoch_changed
            rest = [await next_message(events) for _ in range(3)]
            assert [(m.offset, m.replayed) for m in rest] == [(5, True), (6, True), (7, True)]

    with ServerProcess("--history-size", "3") as server:
        run(main(server))


def test_a_server_restart_reports_the_new_epoch_and_history_has_what_came_meanwhile() -> None:
    server = ServerProcess()
    server.start()

    async def main() -> None:
        gate = TokenGate(token())
        async with connect(server.ws_url(), gate, backoff=FAST) as client:
            events = client.messages()
            await client.subscribe("r1")
            await asyncio.to_thread(server.publish, "r1", {"n": 1})
            assert (await next_message(events)).data == {"n": 1}
            before = client.position("r1")
            gate.shut()
            await asyncio.to_thread(server.kill)
            await wait_state(client, State.RECONNECTING)
            await asyncio.to_thread(server.start)
            await asyncio.to_thread(server.publish, "r1", {"n": 2})
            await asyncio.to_thread(server.publish, "r1", {"n": 3})
            gate.open()
            recovery = await next_event(events)
            assert isinstance(recovery, Recovery)
            assert (recovery.recovered, recovery.missed, recovery.offset) == (False, None, 2)
            assert recovery.since == before and recovery.epoch_changed
            await asyncio.to_thread(server.publish, "r1", {"n": 4})
            live = await next_message(events)
            assert (live.offset, live.data, live.replayed) == (3, {"n": 4}, False)
            page = await client.history("r1", since=0)
            assert [m.data for m in page.messages] == [{"n": 2}, {"n": 3}, {"n": 4}]

    try:
        run(main())
    finally:
        server.kill()


def test_a_publish_whose_reply_was_lost_is_retried_and_not_doubled(
        server: ServerProcess) -> None:
    proxy = TcpProxy(server.port)

    async def main() -> None:
        async with connect(server.ws_url(), token("erin")) as observer, \
                connect(proxy.url(), token(), backoff=FAST) as client:
            events = observer.messages()
            await observer.subscribe("aio:once")
            proxy.hold(up=False, down=True)  # the server gets it; its reply is lost
            publish = asyncio.create_task(client.publish("aio:once", {"once": True}))
            first = await next_message(events)
            assert (first.offset, first.data) == (1, {"once": True})
            proxy.cut()  # the client reconnects and sends it again, same key
            async with asyncio.timeout(WAIT):
                result = await publish
            assert (result.offset, result.duplicate) == (1, True)
            await asyncio.to_thread(server.publish, "aio:once", {"marker": True})
            after = await next_message(events)
            assert (after.offset, after.data) == (2, {"marker": True})

    try:
        run(main())
    finally:
        proxy.close()


# ---------------------------------------------------------------- tokens and stop codes
def test_the_token_is_refreshed_before_it_expires(server: ServerProcess) -> None:
    async def main() -> None:
        short = token(ttl=4)
        tokens = iter([short])
        states = States()
        async with connect(server.ws_url(), lambda: next(tokens, token(ttl=3600)),
                           on_state=states) as client:
            expires = token_expiry(short)
            assert expires is not None
            await asyncio.sleep(expires - time.time() + 1.0)  # past the first token's exp
            assert client.token != short
            assert await client.ping() >= 0
            assert client.state == State.CONNECTED
        assert states.codes(State.RECONNECTING) == []

    run(main())


def test_a_4401_then_a_new_token_reconnects_and_without_one_stops(
        server: ServerProcess) -> None:
    async def main() -> None:
        current = {"token": token("frank", jti="first")}
        states = States()
        async with connect(server.ws_url(), lambda: current["token"], backoff=FAST,
                           on_state=states) as client:
            current["token"] = token("frank", jti="second")
            await asyncio.to_thread(server.api, "POST", "/api/revoke", {"jti": "first"})
            await wait_state(client, State.RECONNECTING)
            await wait_state(client, State.CONNECTED)
            assert client.token == current["token"]
            await asyncio.to_thread(server.api, "POST", "/api/revoke", {"jti": "second"})
            await wait_state(client, State.DISCONNECTED)
            assert client.stopped is not None and client.stopped.code == 4401
            with pytest.raises(Disconnected):
                await client.subscribe("aio:after")
        assert states.codes(State.RECONNECTING) == [4401]

    run(main())


@pytest.mark.parametrize("code", [1000, 4403])
def test_a_stop_code_ends_the_client_and_messages_raises_disconnected(
        server: ServerProcess, code: int) -> None:
    async def main() -> None:
        user = f"stop{code}"
        async with connect(server.ws_url(), token(user), backoff=FAST) as client:
            events = client.messages()
            await asyncio.to_thread(server.api, "POST", "/api/disconnect",
                                    {"user_id": user, "code": code, "reason": "go away"})
            with pytest.raises(Disconnected) as caught:
                await next_event(events)
            assert caught.value.code == code and client.state == State.DISCONNECTED
            with pytest.raises(Disconnected):
                await client.publish("aio:late", 1)

    run(main())


def test_a_link_that_stops_answering_pings_is_dropped_and_reconnected(
        server: ServerProcess) -> None:
    proxy = TcpProxy(server.port)
    states = States()

    async def main() -> None:
        async with connect(proxy.url(), token(), backoff=FAST, ping_interval=0.2,
                           ping_timeout=0.5, on_state=states) as client:
            proxy.hold()  # nothing passes any more, and nothing is closed
            await wait_state(client, State.RECONNECTING)
            await wait_state(client, State.CONNECTED)
            assert await client.ping() >= 0

    try:
        run(main())
    finally:
        proxy.close()
    assert states.codes(State.RECONNECTING)[:1] == [DEAD_LINK]
