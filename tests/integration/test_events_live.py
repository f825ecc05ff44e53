"""Room and user events (protocol §13) on one node, over real sockets: a small HTTP
server on 127.0.0.1 plays the application and records every POST."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from roomcast.router import Router
from tests.integration.test_http_metrics import scrape, value
from tests.support import WAIT, connect, free_port, running_server

HOOK_SECRET = "events-secret"
DELAY = 0.3


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]

    @property
    def event(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded


@dataclass
class Application:
    """Answers each POST with the next of `statuses` (200 once they run out)."""

    port: int = 0
    statuses: list[int] = field(default_factory=list)
    send: trio.MemorySendChannel[Received] | None = None
    receive: trio.MemoryReceiveChannel[Received] | None = None

    async def next(self, timeout: float = WAIT) -> Received:
        assert self.receive is not None
        with trio.fail_after(timeout):
            return await self.receive.receive()

    async def next_of(self, name: str) -> dict[str, Any]:
        """The next event about room or user `name`, skipping others."""
        while True:
            got = (await self.next()).event
            if name in (got.get("room"), got.get("user_id")):
                return got

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:])}
            while len(body) < int(headers.get("content-length", "0")):
                body += await stream.receive_some(65536)
            status = self.statuses.pop(0) if self.statuses else 200
            assert self.send is not None
            await self.send.send(Received(body, headers))
            await stream.send_all(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n"
                                  "Connection: close\r\n\r\n".encode())


@asynccontextmanager
async def application(statuses: list[int] | None = None) -> AsyncIterator[Application]:
    app = Application(statuses=list(statuses or []))
    app.send, app.receive = trio.open_memory_channel[Received](100)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, app.handle, 0, host="127.0.0.1"))
        app.port = listeners[0].socket.getsockname()[1]
        yield app
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def with_events(app: Application, **overrides: Any) -> AsyncIterator[Router]:
    settings: dict[str, Any] = {"events_url": f"http://127.0.0.1:{app.port}/events",
                                "hook_secret": HOOK_SECRET, "events_delay": DELAY}
    async with running_server(**{**settings, **overrides}) as router:
        yield router


async def counted(router: Router, sent: int, failed: int = 0) -> None:
    """Wait until the sender has counted what the application saw (it counts after the
    answer is read, just after the application recorded the request)."""
    metrics, sender = router.metrics, router.events
    assert sender is not None
    with trio.fail_after(WAIT):
        while (metrics.events_sent, metrics.events_failed) != (sent, failed):
            await sender.attempted()


def number(event: dict[str, Any], name: str) -> int:
    """The transition number ending an event's id, checking the rest of it. Alone, a node
    numbers a room's (user's) transitions from the time in ms of the first one (and again
    once it was gone), so that a restart never repeats an id."""
    prefix = f"{event['event']}:{name}:"
    assert event["id"].startswith(prefix), event
    return int(event["id"][len(prefix):])


def signed(received: Received) -> bool:
    mac = hmac.new(HOOK_SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    return received.headers.get("x-roomcast-signature") == f"sha256={mac}"


async def test_rooms_and_users_come_and_go_in_order_signed() -> None:
    async with application() as app, with_events(app) as router:
        async with connect(router, sub="alice") as alice:
            online = await app.next()
            assert signed(online)
            assert online.headers["content-type"] == "application/json"
            user = number(online.event, "alice")
            assert online.event["event"] == "user_online"
            assert online.event["user_id"] == "alice"
            assert online.event["ts"].endswith("Z")
            await alice.subscribe("project:12")
            occupied = (await app.next()).event
            assert occupied["event"] == "room_occupied"
            room = number(occupied, "project:12")
            await alice.call({"type": "unsubscribe", "id": 1, "rooms": ["project:12"]})
            vacated = await app.next()
            assert signed(vacated)
            assert {k: v for k, v in vacated.event.items() if k != "ts"} == {
                "id": f"room_vacated:project:12:{room + 1}", "event": "room_vacated",
                "room": "project:12"}
        offline = await app.next()
        assert offline.event["id"] == f"user_offline:alice:{user + 1}"
        await counted(router, sent=4)


async def test_a_brief_absence_sends_nothing() -> None:
    async with application() as app, with_events(app, events_delay=2.0) as router:
        async with connect(router, sub="alice") as alice:
            user = number(await app.next_of("alice"), "alice")
            await alice.subscribe("project:12")
            occupied = await app.next_of("project:12")
            assert occupied["event"] == "room_occupied"
            room = number(occupied, "project:12")
            await alice.call({"type": "unsubscribe", "id": 1, "rooms": ["project:12"]})
            await alice.subscribe("project:12")  # back within events_delay
            async with connect(router, sub="alice"):
                pass  # a second connection came and went: alice stayed online
            await alice.call({"type": "unsubscribe", "id": 2, "rooms": ["project:12"]})
            # the next event of the room is the final vacate: nothing for the brief absence
            vacated = await app.next_of("project:12")
            assert vacated["id"] == f"room_vacated:project:12:{room + 3}"
        assert (await app.next_of("alice"))["id"] == f"user_offline:alice:{user + 1}"


async def test_an_event_not_answered_with_2xx_is_sent_again() -> None:
    async with application(statuses=[500]) as app, with_events(app) as router, \
            connect(router, sub="alice"):
        first, again = await app.next(), await app.next()
        assert first.body == again.body  # the same id, the same bytes
        assert again.event["event"] == "user_online" and number(again.event, "alice") > 0
        await counted(router, sent=1, failed=1)


async def test_an_unreachable_application_fails_without_harm() -> None:
    async with application() as app:
        port = app.port
    async with running_server(events_url=f"http://127.0.0.1:{port}/events",
                              events_delay=DELAY) as router:
        async with connect(router, sub="alice") as alice:
            reply = await alice.subscribe("project:12")
            assert reply["type"] == "subscribed"
        await counted(router, sent=0, failed=2)  # alice online, the room occupied


async def test_what_overflows_events_queue_is_dropped_and_counted_in_metrics() -> None:
    async with application(statuses=[500]) as app, \
            with_events(app, events_queue=1, http_port=free_port()) as router, \
            connect(router, sub="alice") as alice:
        first = await app.next()  # answered 500: it waits 1 s, still queued
        await alice.subscribe("project:12")  # room_occupied finds the queue full
        again = await app.next()
        assert first.body == again.body
        await counted(router, sent=1, failed=1)
        samples = await scrape(router)
        assert value(samples, "roomcast_events_dropped_total") == 1
        assert value(samples, "roomcast_events_failed_total") == 1
        assert value(samples, "roomcast_events_sent_total") == 1
        assert value(samples, "roomcast_events_given_up_total") == 0
