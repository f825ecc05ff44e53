"""The fuzzer: runs one hypothesis example (a few fuzz clients, each a script of frames)
against the server, judging every answer with the oracle; and the report of a run."""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import jwt
import trio
from wsproto.events import Ping, Pong

from roomcast.codes import CloseCode
from roomcast.fuzz.contract import (
    ALWAYS_ACCEPTABLE,
    DEEP_FRAME,
    GRANTS,
    REPLY_TYPES,
    FuzzFailure,
    server_frame,
    short,
)
from roomcast.fuzz.control import Control
from roomcast.fuzz.examples import Burst, ClientPing, Example, Frame, Script
from roomcast.fuzz.oracle import Expect, Session, same_id
from roomcast.fuzz.rawclient import Closed, RawClient
from roomcast.fuzz.target import Target


@dataclass
class FuzzReport:
    """What a run did and found."""

    target: str
    examples: int = 0  # examples executed (generation, replay and shrinking)
    frames: int = 0
    replies: int = 0
    pushes: int = 0
    closes: Counter[int] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)  # reply types and error codes
    control_messages: int = 0
    seconds: float = 0.0
    failure: str | None = None  # hypothesis's final (shrunk) failure, with the example
    first_failure: str | None = None  # the first failing example as it was drawn

    def summary(self) -> str:
        closes = ", ".join(f"{code}×{n}" for code, n in sorted(self.closes.items())) or "none"
        lines = [
            f"roomcast fuzz {self.target}: {self.examples} examples in {self.seconds:.1f}s",
            f"  frames sent {self.frames}, replies {self.replies}, messages/presence "
            f"{self.pushes}, server closes {closes}",
            "  answers: " + ", ".join(f"{k} {n}" for k, n in self.answers.most_common()),
            f"  control stream: {self.control_messages} messages delivered in order",
        ]
        if self.failure is None:
            lines.append("  OK: no contract violation found")
        else:
            lines.append("  FAILED: " + self.failure)
            if self.first_failure and self.first_failure not in self.failure:
                lines.append("  first failure as drawn: " + self.first_failure)
        return "\n".join(lines)


class Fuzzer:
    """Runs hypothesis examples against one server, with the control clients alongside."""

    def __init__(self, target: Target, jwt_secret: str, *, jwt_algorithm: str = "HS256",
                 timeout: float = 5.0) -> None:
        self.target = target
        self.secret = jwt_secret
        self.algorithm = jwt_algorithm
        self.timeout = timeout
        self.run_id = os.urandom(4).hex()
        self.control_room = f"fuzzctl:{self.run_id}"
        self.report = FuzzReport(target.url)
        self.control = Control(self)

    # ------------------------------------------------------------ tokens
    def mint(self, sub: str, rooms: list[str] | None, publish: list[str] | None,
             ttl: float = 3600, secret: str | None = None, algorithm: str | None = None
             ) -> str:
        claims: dict[str, Any] = {"sub": sub, "exp": int(time.time() + ttl)}
        if rooms is not None:
            claims["rooms"] = rooms
        if publish is not None:
            claims["publish"] = publish
        return jwt.encode(claims, secret or self.secret, algorithm=algorithm or self.algorithm)

    def token_variant(self, sub: str, grant: str, variant: str) -> str:
        """Tokens for `refresh`: only "valid" (same sub, right key, live) may succeed."""
        claims = GRANTS[grant]
        rooms, publish = claims.get("rooms"), claims.get("publish")
        if variant == "valid":
            return self.mint(sub, rooms, publish, ttl=7200)
        if variant == "other":
            return self.mint(sub + "-other", rooms, publish)
        if variant == "badsig":
            return self.mint(sub, rooms, publish, secret=self.secret + "-wrong")
        if variant == "expired":
            return self.mint(sub, rooms, publish, ttl=-600)
        if variant == "none":
            return jwt.encode({"sub": sub, "exp": int(time.time()) + 3600}, "",
                              algorithm="none")
        return "not-a-jwt"

    # ------------------------------------------------------------ one example
    def execute(self, example: Example) -> None:
        """Called by hypothesis in a worker thread: run the example in the Trio loop."""
        trio.from_thread.run(self.run_example, example)

    async def run_example(self, example: Example) -> None:
        self.report.examples += 1
        number = self.report.examples
        problems: list[str] = []

        async def one(index: int, script: Script) -> None:
            try:
                await self.run_script(script, f"fuzz-{self.run_id}-{number}-{index}")
            except FuzzFailure as exc:
                problems.append(f"client {index}: {exc}")
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                problems.append(f"client {index}: connection failed: {exc!r}")
            except Exception as exc:  # a bug in the fuzzer: say so rather than blame the server
                where = traceback.extract_tb(exc.__traceback__)[-1]
                problems.append(f"client {index}: the fuzzer itself failed: {exc!r} at "
                                f"{where.filename}:{where.lineno}")

        async with trio.open_nursery() as nursery:
            for index, script in enumerate(example):
                nursery.start_soon(one, index, script)
        try:
            await self.control.check()
        except FuzzFailure as exc:
            problems.append(f"control: {exc}")
        if problems:
            message = "; ".join(problems)
            if self.report.first_failure is None:
                self.report.first_failure = f"{message}\n    example: {short(example, 4000)}"
            raise FuzzFailure(message)

    async def _open(self, token: str) -> RawClient:
        t = self.target
        with trio.fail_after(self.timeout):
            stream: trio.abc.Stream
            if t.secure:
                stream = await trio.open_ssl_over_tcp_stream(t.host, t.port)
            else:
                stream = await trio.open_tcp_stream(t.host, t.port)
            client = RawClient(stream)
            await client.handshake(t.hostport, f"{t.path}?token={quote(token, safe='')}")
        return client

    async def run_script(self, script: Script, sub: str) -> None:
        claims = GRANTS[script.grant]
        session = Session(self, sub, script.grant)
        client = await self._open(self.mint(sub, claims.get("rooms"), claims.get("publish")))
        try:
            await self._hello(client, session)
            for action in script.actions:
                if client.closed is not None:
                    break
                if isinstance(action, Frame):
                    await self._frame(client, session, action)
                elif isinstance(action, ClientPing):
                    await self._client_ping(client, session, action)
                else:
                    await self._burst(client, session, action)
            if client.closed is None:  # one last ping: no reply may be left over
                session.serial += 1
                key = f"end-{session.serial}"
                await self._send(client, 0x1, json.dumps({"type": "ping", "id": key}).encode())
                answer = await self._reply(client, session, f"the closing ping {key}")
                if isinstance(answer, Closed):
                    self._justify(session, answer, "after the script")
                elif not same_id(answer.get("id"), key):
                    raise FuzzFailure(f"a reply too many: {short(answer)} came before the "
                                      "answer to the closing ping")
                else:
                    self._check(session, answer, Expect([key], {"pong"}, set()), key)
        finally:
            await client.close(self.timeout)

    async def _send(self, client: RawClient, opcode: int, payload: bytes,
                    fragments: int = 1) -> None:
        self.report.frames += 1
        # the server may close while we write; the close shows up on the next read
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await client.send(opcode, payload, fragments)

    async def _hello(self, client: RawClient, session: Session) -> None:
        answer = await self._reply(client, session, "the handshake")
        if isinstance(answer, Closed):
            raise FuzzFailure(f"closed right after the handshake: {answer.code} {answer.reason}")
        limits = answer.get("limits")
        if (answer.get("type") != "connected" or answer.get("user_id") != session.sub
                or not isinstance(answer.get("connection_id"), str)
                or not isinstance(limits, dict)
                or not isinstance(limits.get("max_message_bytes"), int)):
            raise FuzzFailure(f"the first frame is not a proper `connected`: {short(answer)}")
        session.limit = limits["max_message_bytes"]

    async def _reply(self, client: RawClient, session: Session, what: str
                     ) -> dict[str, Any] | Closed:
        """The next reply-type frame (messages and presence events are checked on the way)."""
        with trio.move_on_after(self.timeout):
            while True:
                got = await client.receive()
                if isinstance(got, Closed):
                    self.report.closes[got.code] += 1
                    return got
                if isinstance(got, Pong | Ping):
                    raise FuzzFailure(f"a pong nobody asked for, waiting for {what}")
                if isinstance(got, bytes):
                    raise FuzzFailure(f"a binary frame from the server, waiting for {what}")
                frame = server_frame(got)
                if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                    raise FuzzFailure(f"the server sent a frame without a type: {short(frame)}")
                if frame["type"] in ("message", "joined", "left"):
                    self.report.pushes += 1
                    problem = session.observe(frame)
                    if problem:
                        raise FuzzFailure(problem)
                    continue
                if frame["type"] not in REPLY_TYPES | {"connected"}:
                    raise FuzzFailure(f"a frame type the contract does not know: {short(frame)}")
                self.report.replies += 1
                return frame
        raise FuzzFailure(f"no reply within {self.timeout}s to {what}: the server stalled")

    def _justify(self, session: Session, closed: Closed, what: str) -> None:
        """A close where a reply was due is fine only when something sent explains it."""
        if closed.code == CloseCode.TOO_MANY and (session.rate_limited or session.burst):
            return
        if closed.code == CloseCode.PROTOCOL_VIOLATION and session.binary_sent:
            return
        raise FuzzFailure(f"closed with {closed.code} ({closed.reason!r}) {what}; nothing sent "
                          "explains that close")

    async def _frame(self, client: RawClient, session: Session, frame: Frame) -> None:
        opcode, payload = session.render(frame)
        expect = session.expect(opcode, payload)
        what = f"frame {short(payload[:200])}"
        if opcode == 0x2:
            session.binary_sent += 1
        await self._send(client, opcode, payload, frame.fragments)
        answer = await self._reply(client, session, what)
        if isinstance(answer, Closed):
            if answer.code in expect.closes:
                return
            # A 4429 earned by earlier rate-limited commands may land here: the error reply
            # to the command that crossed the line can arrive before its close.
            earned = answer.code == CloseCode.TOO_MANY and (session.rate_limited or session.burst)
            if expect.close_only and not earned:
                raise FuzzFailure(f"closed with {answer.code} ({answer.reason!r}) after {what}; "
                                  f"expected {sorted(map(int, expect.closes))}")
            return self._justify(session, answer, f"after {what}")
        if expect.close_only:
            raise FuzzFailure(f"answered {short(answer)} to {what}; the contract says close "
                              f"with {sorted(map(int, expect.closes))}")
        self._check(session, answer, expect, what)

    def _check(self, session: Session, reply: dict[str, Any], expect: Expect, what: str) -> None:
        kind = reply["type"]
        self.report.answers[kind if kind != "error" else f"error:{reply.get('code')}"] += 1
        if not any(same_id(reply.get("id"), i) for i in expect.ids):
            raise FuzzFailure(f"reply id {reply.get('id')!r}, expected one of {expect.ids!r}: "
                              f"{short(reply)} to {what}")
        if kind == "error":
            code = reply.get("code")
            if code == "rate_limited":
                session.rate_limited = True
            if code in ALWAYS_ACCEPTABLE or code in expect.codes:
                if isinstance(reply.get("message"), str):
                    return
                raise FuzzFailure(f"an error without a message: {short(reply)}")
            raise FuzzFailure(f"error {code!r}, expected "
                              f"{sorted(expect.codes) if 'error' in expect.kinds else 'success'}"
                              f": {short(reply)} to {what}")
        if kind not in expect.kinds:
            raise FuzzFailure(f"reply {kind!r}, expected {sorted(expect.kinds)}: "
                              f"{short(reply)} to {what}")
        deep = reply.get(DEEP_FRAME, False)  # read shallowly: its contents cannot be checked
        problem = expect.check(reply) if expect.check and not deep else None
        if problem:
            raise FuzzFailure(f"{problem}: {short(reply)} to {what}")
        if expect.track:
            expect.track(reply)

    async def _client_ping(self, client: RawClient, session: Session, ping: ClientPing) -> None:
        self.report.frames += 1
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await client.raw_frame(0x9, ping.payload)
        with trio.move_on_after(self.timeout):
            while True:
                got = await client.receive()
                if isinstance(got, Pong):
                    if got.payload != ping.payload:
                        raise FuzzFailure("the pong's payload differs from the ping's")
                    return
                if isinstance(got, Closed):
                    self.report.closes[got.code] += 1
                    return self._justify(session, got, "after a WebSocket ping")
                if not isinstance(got, str):
                    raise FuzzFailure(f"{short(got)} arrived when only a pong was due")
                frame = server_frame(got)
                if not isinstance(frame, dict) or frame.get("type") not in ("message", "joined",
                                                                              "left"):
                    raise FuzzFailure(f"{short(frame)} arrived when only a pong was due")
                self.report.pushes += 1
                problem = session.observe(frame)
                if problem:
                    raise FuzzFailure(problem)
        raise FuzzFailure(f"no pong within {self.timeout}s to a WebSocket ping")

    async def _burst(self, client: RawClient, session: Session, burst: Burst) -> None:
        session.burst = True
        keys = []
        for _ in range(burst.count):
            session.serial += 1
            keys.append(f"b{session.serial}")
            await self._send(client, 0x1, json.dumps({"type": "ping", "id": keys[-1]}).encode())
        for key in keys:
            answer = await self._reply(client, session, f"burst ping {key}")
            if isinstance(answer, Closed):
                return self._justify(session, answer, "during a burst")
            self._check(session, answer, Expect([key], {"pong"}, set()), f"burst ping {key}")

