"""Limits, heartbeats and the client-triggerable close codes of contract §6 and §7."""

from __future__ import annotations

import itertools
import json
from collections import deque
from typing import Any

import pytest
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from roomcast.router import Router
from tests.support import WAIT, connect, make_token, running_server, ws_url


class RawClient:
    """A minimal WebSocket client on wsproto over a plain TCP stream. It does nothing by
    itself: no automatic pongs, and it reads from the socket only when asked to."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: deque[Event] = deque()
        self._text: list[str] = []

    @classmethod
    async def open(cls, router: Router, token: str) -> RawClient:
        stream = await trio.open_tcp_stream("127.0.0.1", router.ws_port or 0)
        client = cls(stream)
        await client._send(Request(host="127.0.0.1", target=f"/ws?token={token}"))
        event = await client.event()
        assert isinstance(event, AcceptConnection), event
        return client

    async def _send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def event(self) -> Event:
        """The next WebSocket event, reading from the socket as needed."""
        with trio.fail_after(WAIT):
            while not self.pending:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError("the server closed the TCP connection")
                self.ws.receive_data(data)
                self.pending.extend(self.ws.events())
        return self.pending.popleft()

    async def next(self) -> Ping | dict[str, Any] | CloseConnection:
        """The next ping, whole JSON text frame, or close."""
        while True:
            event = await self.event()
            if isinstance(event, Ping | CloseConnection):
                return event
            if isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text, self._text = "".join(self._text), []
                    frame: dict[str, Any] = json.loads(text)
                    return frame
            assert not isinstance(event, RejectConnection | BytesMessage), event

    async def send(self, frame: dict[str, Any]) -> None:
        await self._send(TextMessage(data=json.dumps(frame)))

    async def pong(self, ping: Ping) -> None:
        await self._send(ping.response())

    async def closed(self, timeout: float = WAIT) -> tuple[int, list[Any]]:
        """Read (answering no pings) until the close; its code and what came before."""
        seen: list[Any] = []
        with trio.fail_after(timeout):
            while True:
                item = await self.next()
                if isinstance(item, CloseConnection):
                    if self.ws.state is ConnectionState.REMOTE_CLOSING:
                        await self._send(item.response())
                    return item.code, seen
                seen.append(item)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def first_close(router: Router, token: str) -> int | None:
    """Open a WebSocket whose handshake succeeds; the close code that comes before any data."""
    async with trio_websocket.open_websocket_url(
        ws_url(router, token), connect_timeout=WAIT, disconnect_timeout=WAIT
    ) as ws:
        with trio.fail_after(WAIT):
            try:
                frame = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                return exc.reason.code
    raise AssertionError(f"got a data frame before the close: {frame!r}")


# ------------------------------------------------------------------ 1009
async def test_a_frame_over_max_message_bytes_is_closed_1009() -> None:
    async with running_server(max_message_bytes=1024) as router, connect(router) as alice:
        await alice.send({"type": "ping", "id": 1, "pad": "x" * 1100})
        code, _ = await alice.closed()
    assert code == 1009


async def test_a_frame_of_exactly_max_message_bytes_is_accepted() -> None:
    async with running_server(max_message_bytes=1024) as router, connect(router) as alice:
        frame = '{"type":"ping","id":1,"pad":"' + "x" * 1024
        frame = frame[: 1024 - 2] + '"}'
        assert len(frame.encode()) == 1024
        await alice.send(frame)
        assert (await alice.recv())["type"] == "pong"


# ------------------------------------------------------------------ 4400
async def test_binary_frames_get_errors_then_a_4400_close_when_they_keep_coming() -> None:
    async with running_server(max_binary_frames=3) as router, connect(router) as alice:
        for _ in range(3):
            await alice.send(b"\x00\x01binary")
            error = await alice.recv()
            assert (error["type"], error["code"]) == ("error", "bad_request")
        await alice.send({"type": "ping", "id": "between"})
        assert (await alice.recv())["type"] == "pong"
        await alice.send(b"\x00\x01binary")
        code, _ = await alice.closed()
    assert code == 4400


# ------------------------------------------------------------------ heartbeats, 4408
async def test_a_client_that_stops_answering_pings_is_closed_4408() -> None:
    async with running_server(heartbeat_interval=0.1, heartbeat_timeout=0.6) as router:
        client = await RawClient.open(router, make_token())
        start = trio.current_time()
        code, seen = await client.closed()
        elapsed = trio.current_time() - start
        await client.aclose()
    assert code == 4408
    assert seen[0]["type"] == "connected"
    assert any(isinstance(item, Ping) for item in seen)
    assert 0.5 <= elapsed < WAIT


async def test_a_client_that_answers_pings_stays_connected() -> None:
    async with running_server(heartbeat_interval=0.1, heartbeat_timeout=0.6) as router:
        client = await RawClient.open(router, make_token())
        pings = 0
        with trio.move_on_after(1.8):  # three heartbeat timeouts
            while True:
                item = await client.next()
                assert not isinstance(item, CloseConnection), item.code
                if isinstance(item, Ping):
                    pings += 1
                    await client.pong(item)
        await client.send({"type": "ping", "id": "alive"})
        while isinstance(item := await client.next(), Ping):
            await client.pong(item)
        await client.aclose()
    assert item == {"type": "pong", "id": "alive", "server_time": item["server_time"]}
    assert pings >= 4


async def test_any_inbound_frame_counts_as_life() -> None:
    """A client that never answers a ping frame but sends commands is not timed out."""
    async with running_server(heartbeat_interval=0.1, heartbeat_timeout=0.8) as router:
        client = await RawClient.open(router, make_token())
        assert (await client.next())["type"] == "connected"  # type: ignore[index]
        pongs = 0
        async with trio.open_nursery() as nursery:

            async def chatter() -> None:
                for n in range(25):  # 2.5 s of commands, 0.1 s apart: > 3 timeouts
                    await client.send({"type": "ping", "id": n})
                    await trio.sleep(0.1)

            nursery.start_soon(chatter)
            with trio.fail_after(WAIT):
                while pongs < 25:
                    item = await client.next()
                    assert not isinstance(item, CloseConnection), item.code
                    if isinstance(item, dict) and item["type"] == "pong":
                        pongs += 1
        code, _ = await client.closed()  # and silence is still punished
        await client.aclose()
    assert code == 4408


async def test_an_idle_trio_websocket_client_stays_connected_by_auto_pong() -> None:
    async with running_server(heartbeat_interval=0.1, heartbeat_timeout=0.5) as router, \
            connect(router) as alice:
        with trio.move_on_after(1.5):
            frame = await alice.ws.get_message()
            raise AssertionError(f"unexpected frame {frame!r}")
        assert (await alice.call({"type": "ping", "id": 1}))["type"] == "pong"


async def test_pings_are_sent_every_heartbeat_interval() -> None:
    interval, window = 0.2, 2.0
    async with running_server(heartbeat_interval=interval, heartbeat_timeout=30) as router:
        client = await RawClient.open(router, make_token())
        times: list[float] = []
        with trio.move_on_after(window):
            while True:
                item = await client.next()
                if isinstance(item, Ping):
                    times.append(trio.current_time())
        await client.aclose()
    expected = window / interval  # 10
    assert expected * 0.5 <= len(times) <= expected * 1.3, times
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    assert interval * 0.7 <= gaps[len(gaps) // 2] <= interval * 1.6, gaps


# ------------------------------------------------------------------ 4409
@pytest.mark.parametrize("mailbox", ["direct", "channel"])
async def test_a_client_that_stops_reading_is_closed_4409_without_stalling_others(
        mailbox: str) -> None:
    data = "x" * 200_000
    async with running_server(max_pending=8, write_timeout=30, mailbox=mailbox) as router, connect(
            router, sub="fast") as fast:
        slow = await RawClient.open(router, make_token("slow", rooms=["*"]))
        try:
            assert (await slow.next())["type"] == "connected"  # type: ignore[index]
            await slow.send({"type": "subscribe", "id": 1, "rooms": ["room:1"]})
            assert (await slow.next())["type"] == "subscribed"  # type: ignore[index]
            await fast.subscribe("room:1")
            # From here `slow` reads nothing. Publish in step with `fast`: each message
            # must reach it promptly, before and after `slow` is dropped.
            closed_at = None
            published = 0
            with trio.fail_after(60):
                while closed_at is None or published < closed_at + 20:
                    assert published < 500, "500 messages of 200 kB and no 4409"
                    published += 1
                    offset = await router.publish("room:1", {"n": published, "pad": data})
                    with trio.fail_after(WAIT):
                        message = await fast.recv_type("message")
                    assert message["offset"] == offset == published
                    if closed_at is None and router.metrics.drops["slow_consumer"]:
                        closed_at = published
            # Once `slow` reads again it gets what was sent before the close, then 4409.
            code, seen = await slow.closed(timeout=30)
        finally:
            await slow.aclose()
        with trio.fail_after(WAIT):
            while router.stats()["connections"] != 1:  # noqa: ASYNC110 (no event to await)
                await trio.sleep(0.01)
    assert code == 4409
    offsets = [f["offset"] for f in seen if isinstance(f, dict) and f["type"] == "message"]
    assert offsets == list(range(1, len(offsets) + 1))
    assert closed_at is not None and len(offsets) <= closed_at


async def test_a_slow_client_that_reads_again_after_the_handshake_timeout_still_gets_4409(
) -> None:
    """The close frame waits behind what the socket already holds, for up to write_timeout,
    not handshake_timeout: a client that resumes reading late still learns why it was cut."""
    data = "x" * 200_000
    async with running_server(max_pending=4, handshake_timeout=0.2, write_timeout=30
                              ) as router:
        slow = await RawClient.open(router, make_token("slow", rooms=["*"]))
        try:
            await slow.send({"type": "subscribe", "id": 1, "rooms": ["room:1"]})
            while not (isinstance(f := await slow.next(), dict) and f["type"] == "subscribed"):
                pass
            with trio.fail_after(60):
                for n in range(1, 501):
                    await router.publish("room:1", {"n": n, "pad": data})
                    await trio.lowlevel.checkpoint()
                    if router.metrics.drops["slow_consumer"]:
                        break
            assert router.metrics.drops["slow_consumer"]
            await trio.sleep(1.0)  # five handshake timeouts pass with the client not reading
            code, _seen = await slow.closed(timeout=30)
        finally:
            await slow.aclose()
    assert code == 4409


async def test_a_client_that_never_reads_again_is_dropped_after_write_timeout() -> None:
    """Memory stays bounded: the silent reader is forgotten, not kept with its backlog."""
    data = "x" * 200_000
    async with running_server(max_pending=4, write_timeout=0.5) as router, connect(
            router, sub="fast") as fast:
        slow = await RawClient.open(router, make_token("slow", rooms=["*"]))
        try:
            await slow.send({"type": "subscribe", "id": 1, "rooms": ["room:1"]})
            while not (isinstance(f := await slow.next(), dict) and f["type"] == "subscribed"):
                pass
            await fast.subscribe("room:1")
            with trio.fail_after(60):
                for n in range(1, 501):
                    await router.publish("room:1", {"n": n, "pad": data})
                    assert (await fast.recv_type("message"))["offset"] == n
                    if router.metrics.drops["slow_consumer"]:
                        break
            assert router.metrics.drops["slow_consumer"]
            with trio.fail_after(WAIT):
                while router.stats()["connections"] != 1:  # noqa: ASYNC110 (no event to await)
                    await trio.sleep(0.01)
            assert (await fast.call({"type": "ping", "id": 1}))["type"] == "pong"
        finally:
            await slow.aclose()


# ------------------------------------------------------------------ rate limits, 4429
async def test_a_command_over_the_rate_gets_rate_limited_echoing_its_id() -> None:
    async with running_server(rate_per_second=0.01, rate_burst=2) as router, connect(
            router) as alice:
        assert (await alice.call({"type": "ping", "id": 1}))["type"] == "pong"
        assert (await alice.call({"type": "ping", "id": 2}))["type"] == "pong"
        reply = await alice.call({"type": "ping", "id": "over"})
        assert (reply["type"], reply["id"], reply["code"]) == ("error", "over", "rate_limited")
        assert reply["message"]


async def test_a_rate_limited_command_is_not_executed() -> None:
    async with running_server(rate_per_second=0.01, rate_burst=1) as router, connect(
            router) as alice:
        assert (await alice.call({"type": "ping", "id": 1}))["type"] == "pong"
        reply = await alice.call({"type": "publish", "id": 2, "room": "room:1", "data": 1})
        assert reply["code"] == "rate_limited"
        assert await router.publish("room:1", "server") == 1  # the first message there


async def test_a_bad_frame_over_the_rate_also_gets_rate_limited() -> None:
    async with running_server(rate_per_second=0.01, rate_burst=1) as router, connect(
            router) as alice:
        assert (await alice.call({"type": "ping", "id": 1}))["type"] == "pong"
        reply = await alice.call({"type": "teleport", "id": 2})
    assert reply["code"] == "rate_limited"


async def test_sustained_rate_limit_abuse_is_closed_4429() -> None:
    """More than rate_burst rejected commands within 10 s: the next rejection closes."""
    burst = 3
    async with running_server(rate_per_second=0.01, rate_burst=burst) as router, connect(
            router) as alice:
        for n in range(burst):
            assert (await alice.call({"type": "ping", "id": n}))["type"] == "pong"
        for n in range(burst, 2 * burst):  # rate_burst rejections: still open
            reply = await alice.call({"type": "ping", "id": n})
            assert (reply["code"], reply["id"]) == ("rate_limited", n)
        await alice.send({"type": "ping", "id": "one-too-many"})
        code, _ = await alice.closed()
    assert code == 4429


async def test_a_few_rate_limited_commands_do_not_close_the_connection() -> None:
    async with running_server(rate_per_second=0.01, rate_burst=3) as router, connect(
            router) as alice:
        for n in range(6):  # 3 executed, 3 rejected: not more than rate_burst
            await alice.send({"type": "ping", "id": n})
        kinds = [(await alice.recv())["type"] for _ in range(6)]
        assert kinds == ["pong"] * 3 + ["error"] * 3
        with trio.move_on_after(0.3):
            frame = await alice.ws.get_message()
            raise AssertionError(f"unexpected frame {frame!r}")
        assert not alice.ws.closed


async def test_one_more_connection_than_max_connections_per_user_is_closed_4429() -> None:
    async with running_server(max_connections_per_user=2) as router, connect(
            router) as _a1, connect(router) as _a2:
        assert await first_close(router, make_token("alice")) == 4429
        async with connect(router, sub="bob") as bob:  # other users are not affected
            assert bob.connected["user_id"] == "bob"


async def test_a_user_below_the_limit_again_can_connect_again() -> None:
    async with running_server(max_connections_per_user=1) as router:
        async with connect(router):
            assert await first_close(router, make_token("alice")) == 4429
        with trio.fail_after(WAIT):
            while True:  # the server forgets the closed connection a moment later
                async with trio_websocket.open_websocket_url(
                    ws_url(router, make_token("alice")), connect_timeout=WAIT,
                    disconnect_timeout=WAIT,
                ) as ws:
                    try:
                        frame = json.loads(await ws.get_message())
                    except trio_websocket.ConnectionClosed as exc:
                        assert exc.reason.code == 4429
                        await trio.sleep(0.02)
                        continue
                assert frame["type"] == "connected"
                break


# ------------------------------------------------------------------ 1013
async def test_one_more_connection_than_max_connections_is_closed_1013() -> None:
    async with running_server(max_connections=2) as router, connect(
            router, sub="a") as _a, connect(router, sub="b") as _b:
        assert await first_close(router, make_token("c")) == 1013


async def test_one_more_connection_than_max_connections_per_ip_is_closed_1013() -> None:
    async with running_server(max_connections_per_ip=2) as router, connect(
            router, sub="a") as _a, connect(router, sub="b") as _b:
        assert await first_close(router, make_token("c")) == 1013
