"""The control clients: a steady, checked stream of messages through the server while the
fuzz clients do their worst."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, Protocol

import trio
import trio_websocket

from roomcast.fuzz.contract import FuzzFailure, short
from roomcast.fuzz.target import Target


class Tally(Protocol):
    """The counts a Control reads and adds to (the run's FuzzReport)."""

    control_messages: int  # written: one more per control message delivered in order

    @property
    def examples(self) -> int: ...


class Owner(Protocol):
    """What a Control needs from the fuzzer it works for (roomcast.fuzz.fuzzer.Fuzzer):
    read-only members, so the fuzzer's own, narrower types satisfy it."""

    @property
    def target(self) -> Target: ...

    @property
    def run_id(self) -> str: ...

    @property
    def control_room(self) -> str: ...

    @property
    def timeout(self) -> float: ...

    @property
    def report(self) -> Tally: ...

    def mint(self, sub: str, rooms: list[str] | None, publish: list[str] | None) -> str: ...


class Control:
    """Two clients outside the fuzzing: one publishes a counter into a room the fuzz
    clients may read but not write, the other must receive every value, in order."""

    def __init__(self, fuzzer: Owner) -> None:
        self.fuzzer = fuzzer
        self.failure: str | None = None
        self.published = 0  # highest counter the server acknowledged
        self.received = 0  # highest counter delivered, all before it delivered too
        self.last_offset: int | None = None
        self.pongs: dict[str, trio.Event] = {}
        self.arrived = trio.Event()
        self.sub_ws: trio_websocket.WebSocketConnection | None = None
        self.period = 0.05
        self.pinged_at = -math.inf

    def fail(self, message: str) -> None:
        if self.failure is None:
            self.failure = message
        self.arrived.set()
        for waiting in self.pongs.values():
            waiting.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        fz = self.fuzzer
        timeout = fz.timeout
        sub_url = fz.target.url_with(fz.mint(f"fuzzctl-sub-{fz.run_id}", ["fuzzctl:*"], []))
        pub_url = fz.target.url_with(fz.mint(f"fuzzctl-pub-{fz.run_id}", [], ["fuzzctl:*"]))
        async with (
            trio_websocket.open_websocket_url(sub_url, connect_timeout=timeout,
                                              disconnect_timeout=timeout) as sub,
            trio_websocket.open_websocket_url(pub_url, connect_timeout=timeout,
                                              disconnect_timeout=timeout) as pub,
        ):
            with trio.fail_after(timeout):
                hello = json.loads(await sub.get_message())
                await pub.get_message()
                await sub.send_message(json.dumps({"type": "subscribe", "id": "ctl",
                                                   "rooms": [fz.control_room]}))
                reply = json.loads(await sub.get_message())
            if reply.get("type") != "subscribed" or not reply["rooms"][fz.control_room]["ok"]:
                raise FuzzFailure(f"the control client could not subscribe: {reply!r}")
            self.last_offset = reply["rooms"][fz.control_room]["offset"]
            rate = float(hello.get("limits", {}).get("rate_per_second", 20))
            self.period = max(2.0 / rate, 0.02)  # half the allowed rate
            self.sub_ws = sub
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guarded, self._read, sub)
                nursery.start_soon(self._guarded, self._publish, pub)
                task_status.started()

    async def _guarded(self, task: Callable[[trio_websocket.WebSocketConnection], Any],
                       ws: trio_websocket.WebSocketConnection) -> None:
        """A control task that goes wrong records a failure instead of ending the run."""
        try:
            await task(ws)
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            self.fail(f"the control client got something it cannot read: {exc!r}")

    async def _read(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            try:
                frame = json.loads(await ws.get_message())
            except trio_websocket.ConnectionClosed as exc:
                return self.fail(f"the server closed the control subscriber: {exc.reason}")
            kind = frame.get("type")
            if kind in ("pong", "error") and frame.get("id") in self.pongs:
                self.pongs.pop(frame["id"]).set()  # (a rate_limited error is an answer too)
            elif kind == "message" and frame.get("room") == self.fuzzer.control_room:
                n = frame.get("data", {}).get("n")
                if n != self.received + 1 or frame.get("offset") != (self.last_offset or 0) + 1:
                    return self.fail(f"control stream skipped: got n={n} offset="
                                     f"{frame.get('offset')} after n={self.received} offset="
                                     f"{self.last_offset}")
                self.received, self.last_offset = n, frame["offset"]
                self.fuzzer.report.control_messages += 1
                self.arrived.set()
                self.arrived = trio.Event()
            else:
                return self.fail(f"unexpected frame on the control subscriber: {short(frame)}")

    async def _publish(self, ws: trio_websocket.WebSocketConnection) -> None:
        n = 0
        while True:
            n += 1
            sent = trio.current_time()
            try:
                await ws.send_message(json.dumps({
                    "type": "publish", "id": n, "room": self.fuzzer.control_room,
                    "data": {"n": n}}))
                with trio.move_on_after(self.fuzzer.timeout) as scope:
                    reply = json.loads(await ws.get_message())
            except trio_websocket.ConnectionClosed as exc:
                return self.fail(f"the server closed the control publisher: {exc.reason}")
            if scope.cancelled_caught:
                return self.fail(f"control publish {n} not answered within "
                                 f"{self.fuzzer.timeout}s: the server stalled")
            if reply.get("type") != "published" or reply.get("id") != n:
                return self.fail(f"control publish {n} got {short(reply)}")
            self.published = n
            await trio.sleep_until(sent + self.period)

    async def check(self) -> None:
        """The server still answers a ping, and every acknowledged publish was delivered."""
        timeout = self.fuzzer.timeout
        if (self.failure is None and self.sub_ws is not None
                and trio.current_time() - self.pinged_at >= self.period):  # within the rate
            self.pinged_at = trio.current_time()
            key = f"ctl-ping-{self.fuzzer.report.examples}"
            self.pongs[key] = done = trio.Event()
            try:
                await self.sub_ws.send_message(json.dumps({"type": "ping", "id": key}))
            except trio_websocket.ConnectionClosed:
                self.fail("the control subscriber's connection is closed")
            with trio.move_on_after(timeout):
                await done.wait()
            if not done.is_set():
                self.fail(f"the server did not answer a ping within {timeout}s")
        if self.failure is None:
            want = self.published
            with trio.move_on_after(timeout):
                while self.received < want and self.failure is None:
                    await self.arrived.wait()
            if self.received < want:
                self.fail(f"control stream stalled: {want} acknowledged, {self.received} "
                          f"delivered after {timeout}s")
        if self.failure is not None:
            raise FuzzFailure(self.failure)

