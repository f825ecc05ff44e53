"""roomcast.client against real servers: in-process, or a `roomcast serve` child process
where the test kills and restarts it. Every wait has a time-out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.lowlevel

from roomcast.client import (
    DEAD_LINK,
    Backoff,
    Client,
    CloseInfo,
    ConnectError,
    Direct,
    Disconnected,
    Event,
    Joined,
    Left,
    Message,
    Recovery,
    State,
    connect,
    token_expiry,
)
from tests.support import (
    WAIT,
    ServerProcess,
    TcpProxy,
    free_port,
    make_token,
    running_server,
    ws_url,
)
from tests.support import (
    connect as raw_connect,
)

FAST = Backoff(initial=0.05, factor=1.5, maximum=0.5)


class TokenGate:
    """A token function that the test can hold shut: a reconnect waits in it (as it would
    for a slow token service) until the test opens it again."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls = 0
        self._open = trio.Event()
        self._open.set()

    def shut(self) -> None:
        self._open = trio.Event()

    def open(self) -> None:
        self._open.set()

    async def __call__(self) -> str:
        self.calls += 1
        await self._open.wait()
        return self.token


class States:
    """Records every state change with its close info."""

    def __init__(self) -> None:
        self.seen: list[tuple[State, CloseInfo | None]] = []

    def __call__(self, state: State, close: CloseInfo | None) -> None:
        self.seen.append((state, close))

    def codes(self, state: State) -> list[int]:
        return [close.code for s, close in self.seen if s == state and close is not None]


def token(sub: str = "alice", **claims: Any) -> str:
    return make_token(sub, rooms=["*"], publish=["*"], **claims)


async def next_event(events: AsyncIterator[Event], timeout: float = WAIT) -> Event:
    with trio.fail_after(timeout):
        return await events.__anext__()


async def next_message(events: AsyncIterator[Event], timeout: float = WAIT) -> Message:
    event = await next_event(events, timeout)
    assert isinstance(event, Message), event
    return event


async def wait_state(client: Client, state: State, timeout: float = WAIT) -> None:
    with trio.fail_after(timeout):
        await client.wait_state(state)


async def in_thread(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


# ---------------------------------------------------------------- the basics
async def test_a_client_subscribes_publishes_and_receives_its_message() -> None:
    async with running_server() as router, connect(ws_url(router), token()) as client:
        result = await client.subscribe("project:12")
        assert result["project:12"].ok and result["project:12"].offset == 0
        published = await client.publish("project:12", {"task_id": 7}, event="task.created")
        assert (published.offset, published.duplicate) == (1, False)
        message = await next_message(client.messages())
        assert (message.room, message.offset, message.event, message.data, message.sender) == (
            "project:12", 1, "task.created", {"task_id": 7}, "alice")
        assert client.position("project:12") == (1, result["project:12"].epoch)


async def test_presence_events_and_direct_frames_come_as_typed_objects() -> None:
    async with running_server() as router, connect(ws_url(router), token()) as client:
        events = client.messages()
        await client.subscribe("r1", presence=True)
        assert isinstance(await next_event(events), Joined)  # alice herself
        async with raw_connect(router, sub="bob") as bob:
            await bob.subscribe("r1")
            joined = await next_event(events)
            assert isinstance(joined, Joined) and joined.user_id == "bob"
        left = await next_event(events)
        assert left == Left("r1", "bob")
        assert client.connection is not None
        assert router.send_to_connection(client.connection["connection_id"], {"hi": 1}, "note")
        direct = await next_event(events)
        assert isinstance(direct, Direct) and (direct.event, direct.data) == ("note", {"hi": 1})


async def test_history_and_presence_answer_with_typed_results() -> None:
    async with running_server() as router, connect(ws_url(router), token()) as client:
        await client.subscribe("r1")
        for n in range(3):
            await router.publish("r1", {"n": n})
        page = await client.history("r1", since=1, limit=5)
        assert [m.data for m in page.messages] == [{"n": 1}, {"n": 2}]
        assert page.offset == 3 and page.epoch == client.position("r1").epoch  # type: ignore[union-attr]
        users = await client.presence("r1")
        assert [(u.user_id, u.connections) for u in users] == [("alice", 1)]
        assert await client.ping() >= 0


async def test_a_refused_subscribe_is_reported_and_not_kept() -> None:
    async with running_server() as router, connect(
        ws_url(router), make_token("alice", rooms=["project:*"])
    ) as client:
        result = await client.subscribe(["project:1", "secret"])
        assert result["project:1"].ok
        assert (result["secret"].ok, result["secret"].error) == (False, "forbidden")
        assert client.subscriptions == ["project:1"]


# ---------------------------------------------------------------- resume
async def test_a_server_restart_reports_the_new_epoch_and_history_has_what_came_meanwhile(
) -> None:
    server = ServerProcess()
    await in_thread(server.start)
    try:
        gate = TokenGate(token())
        async with connect(server.ws_url(), gate, backoff=FAST) as client:
            events = client.messages()
            await client.subscribe("r1")
            await in_thread(server.publish, "r1", {"n": 1})
            assert (await next_message(events)).data == {"n": 1}
            before = client.position("r1")
            assert before is not None

            gate.shut()  # the reconnect waits for a token until the messages are out
            await in_thread(server.kill)
            await wait_state(client, State.RECONNECTING)
            await in_thread(server.start)
            await in_thread(server.publish, "r1", {"n": 2})
            await in_thread(server.publish, "r1", {"n": 3})
            gate.open()

            # In-memory history died with the process: a new epoch, nothing to replay.
            recovery = await next_event(events)
            assert isinstance(recovery, Recovery)
            assert (recovery.recovered, recovery.missed, recovery.offset) == (False, None, 2)
            assert recovery.since == before and recovery.epoch_changed
            await in_thread(server.publish, "r1", {"n": 4})
            live = await next_message(events)
            assert (live.offset, live.data, live.replayed) == (3, {"n": 4}, False)
            # What the contract leaves to the app: reload the new stream from history.
            page = await client.history("r1", since=0)
            assert [m.data for m in page.messages] == [{"n": 2}, {"n": 3}, {"n": 4}]
            assert page.epoch == recovery.epoch
    finally:
        await in_thread(server.kill)


async def test_after_a_4409_the_client_resumes_with_since_and_gets_what_it_missed() -> None:
    async with running_server() as router:
        gate = TokenGate(token())
        states = States()
        async with connect(ws_url(router), gate, backoff=FAST, on_state=states) as client:
            events = client.messages()
            await client.subscribe("r1")
            for n in (1, 2, 3):
                await router.publish("r1", {"n": n})
            assert [(await next_message(events)).offset for _ in range(3)] == [1, 2, 3]

            gate.shut()
            await router.disconnect_user("alice", 4409, "too slow")
            await wait_state(client, State.RECONNECTING)
            for n in (4, 5, 6):
                await router.publish("r1", {"n": n})
            gate.open()

            recovery = await next_event(events)
            assert isinstance(recovery, Recovery)
            assert (recovery.recovered, recovery.since.offset, recovery.offset) == (True, 3, 6)
            replayed = [await next_message(events) for _ in range(3)]
            assert [(m.offset, m.data, m.replayed) for m in replayed] == [
                (4, {"n": 4}, True), (5, {"n": 5}, True), (6, {"n": 6}, True)]
            await router.publish("r1", {"n": 7})
            live = await next_message(events)
            assert (live.offset, live.replayed) == (7, False)
        assert states.codes(State.RECONNECTING) == [4409]


async def test_a_client_that_stops_reading_is_closed_4409_and_resumes_without_a_gap() -> None:
    count, size = 300, 64 * 1024
    async with running_server(history_size=count, write_timeout=0.5) as router, connect(
        ws_url(router), token(), backoff=FAST, max_buffer=1, ping_interval=None
    ) as client:
        await client.subscribe("r1")
        events = client.messages()  # not read yet: the client stops reading the socket
        blob = "x" * size
        for n in range(1, count + 1):
            await router.publish("r1", {"n": n, "blob": blob})
            await trio.lowlevel.checkpoint()  # let the server's writer push into the socket
        with trio.fail_after(WAIT * 2):
            while router.metrics.closes[4409] == 0:  # noqa: ASYNC110 (a server count: no event)
                await trio.sleep(0.05)
        assert router.metrics.drops["write_timeout"] > 0

        offsets: list[int] = []
        recoveries: list[Recovery] = []
        with trio.fail_after(WAIT * 4):
            while not offsets or offsets[-1] < count:
                event = await next_event(events)
                if isinstance(event, Recovery):
                    recoveries.append(event)
                elif isinstance(event, Message):
                    offsets.append(event.offset)
        assert offsets == list(range(1, count + 1))
        assert recoveries and all(r.recovered for r in recoveries)


async def test_a_4401_then_a_new_token_from_the_token_function_reconnects() -> None:
    async with running_server() as router:
        current = {"token": token(jti="first")}
        states = States()
        async with connect(ws_url(router), lambda: current["token"], backoff=FAST,
                           on_state=states) as client:
            events = client.messages()
            await client.subscribe("r1")
            current["token"] = token(jti="second")
            await router.revoke("first")
            recovery = await next_event(events)
            assert isinstance(recovery, Recovery) and recovery.recovered
            assert client.token == current["token"]
            await router.publish("r1", {"after": "4401"})
            assert (await next_message(events)).data == {"after": "4401"}
        assert states.codes(State.RECONNECTING) == [4401]


async def test_a_4401_with_no_new_token_stops_the_client_for_good() -> None:
    async with running_server() as router, connect(
        ws_url(router), token(jti="same"), backoff=FAST  # a string: it never changes
    ) as client:
        events = client.messages()
        await router.revoke("same")
        with pytest.raises(Disconnected) as stopped:
            await next_event(events)
        assert (stopped.value.code, stopped.value.reason) == (4401, "token revoked")
        assert client.state == State.DISCONNECTED
        with pytest.raises(Disconnected):
            await client.publish("r1", {"too": "late"})


@pytest.mark.parametrize("code", [1000, 4400, 4403])
async def test_a_stop_code_ends_the_client(code: int) -> None:
    async with running_server() as router, connect(ws_url(router), token(),
                                                   backoff=FAST) as client:
        await router.disconnect_user("alice", code, "go away")
        await wait_state(client, State.DISCONNECTED)
        assert client.stopped is not None and client.stopped.code == code


async def test_a_first_connection_refused_with_4401_raises_disconnected() -> None:
    async with running_server() as router:
        with pytest.raises(Disconnected) as stopped:
            async with connect(ws_url(router), make_token("alice", ttl=-10)):
                pass
        assert stopped.value.code == 4401


async def test_connecting_where_nothing_listens_gives_up_after_wait() -> None:
    with pytest.raises(ConnectError, match="could not connect"):
        async with connect(f"ws://127.0.0.1:{free_port()}/ws", token(), wait=0.5,
                           backoff=FAST):
            pass


# ---------------------------------------------------------------- publish, ping, refresh
async def test_a_publish_whose_reply_was_lost_is_retried_and_not_doubled() -> None:
    async with running_server() as router, raw_connect(router, sub="bob") as observer:
        await observer.subscribe("r1")
        proxy = TcpProxy(router.ws_port or 0)
        try:
            async with connect(proxy.url(), token(), backoff=FAST) as client:
                proxy.hold(up=False, down=True)  # the server gets it; its reply is lost
                results = []

                async def publish() -> None:
                    results.append(await client.publish("r1", {"once": True}))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(publish)
                    first = await observer.recv_type("message")
                    assert (first["offset"], first["data"]) == (1, {"once": True})
                    proxy.cut()  # the client reconnects and sends it again, same key
                assert [(r.offset, r.duplicate) for r in results] == [(1, True)]
        finally:
            proxy.close()
        await router.publish("r1", {"marker": True})
        after = await observer.recv_type("message")
        assert (after["offset"], after["data"]) == (2, {"marker": True})


async def test_a_link_that_stops_answering_pings_is_dropped_and_reconnected() -> None:
    async with running_server() as router:
        proxy = TcpProxy(router.ws_port or 0)
        states = States()
        try:
            async with connect(proxy.url(), token(), backoff=FAST, ping_interval=0.2,
                               ping_timeout=0.5, on_state=states) as client:
                proxy.hold()  # nothing passes any more, and nothing is closed
                await wait_state(client, State.RECONNECTING)
                await wait_state(client, State.CONNECTED)
                assert await client.ping() >= 0
        finally:
            proxy.close()
        assert states.codes(State.RECONNECTING)[:1] == [DEAD_LINK]


async def test_the_token_is_refreshed_before_it_expires() -> None:
    async with running_server() as router:
        short = token(ttl=4)
        tokens = iter([short])
        states = States()
        async with connect(ws_url(router), lambda: next(tokens, token(ttl=3600)),
                           on_state=states) as client:
            expires = token_expiry(short)
            assert expires is not None
            # Past the first token's exp (no leeway): still the same connection.
            await trio.sleep(expires - time.time() + 1.0)
            assert client.token != short
            assert await client.ping() >= 0
            assert client.state == State.CONNECTED
        assert states.codes(State.RECONNECTING) == []


def test_backoff_grows_by_the_factor_up_to_the_cap_with_full_jitter() -> None:
    backoff = Backoff()
    assert [backoff.delay(n, rand=lambda: 0.0) for n in (0, 1, 2, 30)] == [
        0.5, 0.75, 1.125, 30.0]
    assert backoff.delay(3, rand=lambda: 0.999) < 0.01
    assert Backoff(jitter=0).delay(2, rand=lambda: 0.7) == 1.125
    assert backoff.delay(0, 4429, rand=lambda: 0.0) == 5.0
    assert backoff.delay(7, 1001, rand=lambda: 0.5) == 0.25  # draining: at once, jittered
