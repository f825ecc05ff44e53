"""The Router actor: the one owner of the routing core, and the hand that performs what
the core decides.

Every input reaches the core through a method here, in whichever task it arrives: a
connection's own task for its frames (`handle`), the backplane's reader for messages,
presence and control (the `Sink` methods), the sweeper for time, and the embedding and
HTTP API for the rest. Each core call changes state without waiting and returns effects;
sends and closes are performed at once, in order: a frame goes into the connection's
mailbox with `send_nowait`, and a full mailbox closes that connection with 4409, so no
connection ever slows the Router or anybody else.

The await points, all in `_perform`, are the backplane questions (`Ask`: publish, a
room's position, history, presence, watch and unwatch), an embedding application's own
command handlers (`RunCommand`) and the application's hooks over HTTP (`CallHook`, §11).
While one is awaited, other tasks go on changing the core's state: the asking connection
may close, its subscription may be replaced or dropped, a room may empty. The core's
continuation that receives the answer (`then`) checks each of these against the state it
finds, never against what it saw before the await.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

import trio
import trio.testing

from roomcast import protocol as p
from roomcast.auth import Principal
from roomcast.backplane import Backplane, BackplaneUnavailable, create_backplane
from roomcast.codes import CloseCode
from roomcast.core import (
    Ask,
    CallHook,
    CallHooks,
    Close,
    Effects,
    Fanout,
    Peer,
    Refused,
    RoutingCore,
    RunCommand,
    Send,
)
from roomcast.events_sender import EventSender
from roomcast.hooks import HookClient
from roomcast.jwks_fetch import KeySetFetcher
from roomcast.log import event
from roomcast.metrics import Metrics
from roomcast.serverapi import ServerApi
from roomcast.settings import Settings

CommandHandler = Callable[[Principal, dict[str, Any]], Awaitable[Any]]

__all__ = ["CommandHandler", "Refused", "Router", "Serving"]


class Serving(Protocol):
    """What serves a Router's listeners (roomcast.server.Server)."""

    ws_port: int | None
    http_port: int | None

    @property
    def draining(self) -> bool: ...

    async def serve(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...

    def shutdown(self) -> None: ...

    async def wait_drained(self) -> None: ...


class Router(ServerApi):
    """Routes every message of this node. Made by `roomcast.open_router`; see
    docs/embedding.md for the API and docs/architecture.md for the house."""

    def __init__(self, settings: Settings, backplane: Backplane | None = None) -> None:
        self.settings = settings
        self.backplane = backplane or create_backplane(settings)
        self.core = RoutingCore(settings)
        self.metrics: Metrics = self.core.metrics
        self.commands: dict[str, CommandHandler] = {}
        self.server: Serving | None = None  # attached by roomcast.open_router
        self._wake: trio.CancelScope | None = None
        self._real_clock = True
        self._nursery: trio.Nursery | None = None  # the Router's own, while it runs
        self.hooks = HookClient(settings)  # the application's hooks (§11)
        self.key_fetcher = (KeySetFetcher(settings.jwt_jwks_url, self.core.authenticator)
                            if settings.jwt_jwks_url else None)  # jwt_jwks_url (§14)
        self.events = (EventSender(settings, self.metrics, self.backplane)
                       if settings.events_url else None)  # events_url (§13)
        self.core.wall_base = time.time() - time.monotonic()

    @property
    def conns(self) -> Mapping[str, Peer]:
        """The live connections of this node by id (read only)."""
        return MappingProxyType(self.core.peers)

    def wall(self) -> float:
        """Unix time on the Trio clock, so token expiry follows a MockClock in tests."""
        return self.core.wall(trio.current_time())

    # ------------------------------------------------------------ lifecycle
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The Router's own tasks: the backplane's receiver, the one sweeper and, with
        jwt_jwks_url, the key set's fetcher."""
        now = trio.current_time()
        self.core.wall_base = time.time() - now
        # On the system clock, Unix time is read again at every handshake and sweep: the
        # monotonic clock drifts from it (ms per second on some machines), and a token
        # minted just now must not look issued in the future. A test clock is followed as is.
        self._real_clock = not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
        self.core.deadlines.restart(now)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.backplane.run, self)
                nursery.start_soon(self._sweeper)
                if self.key_fetcher is not None:
                    nursery.start_soon(self.key_fetcher.run)
                if self.events is not None:
                    await nursery.start(self.events.run)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.hooks.aclose()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the WebSocket (and HTTP) listeners until `shutdown()` drains them."""
        await self._server().serve(task_status=task_status)

    def shutdown(self) -> None:
        """Begin a graceful shutdown: stop accepting and close everyone with 1001."""
        self._server().shutdown()

    async def wait_drained(self) -> None:
        """Return once no connection is left, closing handshakes included."""
        await self._server().wait_drained()

    def _server(self) -> Serving:
        if self.server is None:
            raise RuntimeError("this Router has no listeners: make it with roomcast.open_router")
        return self.server

    @property
    def ws_port(self) -> int | None:
        return self.server.ws_port if self.server is not None else None

    @property
    def http_port(self) -> int | None:
        return self.server.http_port if self.server is not None else None

    @property
    def draining(self) -> bool:
        return self.server is not None and self.server.draining

    @property
    def ready(self) -> bool:
        return not self.draining and self.backplane.ready

    # ------------------------------------------------------------ connections
    def authenticate(self, token: str | None) -> Principal:
        """Verify a handshake's token (counting failures by reason); AuthError if refused."""
        now = trio.current_time()
        self._anchor(now)
        return self.core.authenticate(token, now)

    def _anchor(self, now: float) -> None:
        """Tie the core's Unix time to the system clock again (see `run`)."""
        if self._real_clock:
            self.core.wall_base = time.time() - now

    async def await_key(self, token: str | None) -> None:
        """With jwt_jwks_url: before `authenticate`, a token naming a key the set lacks
        waits (2 s at most) for a refetch that may bring it."""
        if self.key_fetcher is not None:
            await self.key_fetcher.await_key(token)

    def admit(self, principal: Principal, remote: str, remote_ip: str, hooked: bool = False
              ) -> tuple[Peer, bytes]:
        """Admit a connection within the limits, or raise Refused: its record in the core
        and its `connected` frame (`hooked`: the connect hook admitted it)."""
        peer, frame = self.core.admit(principal, remote, remote_ip, trio.current_time(),
                                      hooked)
        self._rewake()
        self._count_user(principal.user_id)
        return peer, frame

    async def started(self, peer: Peer) -> None:
        """A connection's actor runs: the rooms its token subscribes it to, at once."""
        await self._perform(self.core.claimed(peer))

    async def leave(self, peer: Peer) -> None:
        """A connection is closing: forget it (presence and counts at once)."""
        await self._perform(self.core.leave(peer, peer.close_code))
        self._count_user(peer.principal.user_id)

    def _count_user(self, user_id: str) -> None:
        """Tell the backplane how many of the user's connections this node holds (§13)."""
        self.backplane.user_connections(user_id, len(self.core.by_user.get(user_id, ())))

    async def handle(self, peer: Peer, text: str) -> None:
        """Execute one text frame from a connection; every command gets one reply."""
        now = trio.current_time()
        self._anchor(now)  # a refresh verifies a token; a message's `ts` is Unix time now
        await self._perform(self.core.command(peer, text, now))
        self._rewake()  # a refresh may have moved a token's expiry

    def control_frame(self, peer: Peer, pong: bool = False) -> None:
        """Count a ping, pong or close frame against the connection's rate limit."""
        effects = self.core.control_frame(peer, trio.current_time(), pong)
        if effects:
            self._perform_now(effects)

    def binary_frame(self, peer: Peer) -> None:
        self._perform_now(self.core.binary_frame(peer))

    def send(self, peer: Peer, frame: bytes) -> None:
        """One frame to one connection, through its mailbox."""
        self._send(peer, frame)

    # ------------------------------------------------------------ performing effects
    async def _perform(self, effects: Effects) -> None:
        """Perform effects in order; `Ask`, `RunCommand` and `CallHook` are the await
        points (the backplane, an app's own handler, the application over HTTP)."""
        for effect in effects:
            if isinstance(effect, Ask):
                await self._ask(effect)
            elif isinstance(effect, RunCommand):
                await self._run_command(effect)
            elif isinstance(effect, CallHook):
                await self._perform(effect.then(await self.hooks.call(effect.name, effect.body)))
                self._rewake()  # the refresh hook may have moved a deadline
            elif isinstance(effect, CallHooks):
                await self._perform(effect.then(await self._call_hooks(effect.calls)))
            else:
                self._perform_now((effect,))

    async def _call_hooks(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Several hook requests at once; their outcomes in order."""
        outcomes: list[Any] = [None] * len(calls)

        async def one(i: int, name: str, body: dict[str, Any]) -> None:
            outcomes[i] = await self.hooks.call(name, body)

        async with trio.open_nursery() as nursery:
            for i, (name, body) in enumerate(calls):
                nursery.start_soon(one, i, name, body)
        return outcomes

    async def _ask(self, ask: Ask) -> None:
        try:
            answer = await getattr(self.backplane, ask.method)(*ask.args)
        except BackplaneUnavailable as exc:
            if ask.unavailable is not None:
                await self._perform(ask.unavailable(exc))
            else:  # bookkeeping the backplane redoes when it is back (watching a room)
                self.metrics.drops[f"backplane_{ask.method}"] += 1
                event("backplane request failed", logging.WARNING, request=ask.method,
                      error=str(exc))
            return
        if ask.then is not None:
            await self._perform(ask.then(answer))

    async def _run_command(self, run: RunCommand) -> None:
        handler = self.commands[run.name]
        try:
            data = await handler(run.peer.principal, run.payload)
        except Exception as exc:
            event("command handler failed", logging.ERROR, exc_info=True,
                  command=run.name, conn=run.peer.id)
            self._perform_now(run.then(None, exc))
            return
        self._perform_now(run.then(data, None))

    def _perform_now(self, effects: Effects) -> None:
        """Sends and closes: done at once, without waiting."""
        for effect in effects:
            kind = type(effect)
            if kind is Fanout:
                self._fanout(effect.frame, effect.peers)  # type: ignore[union-attr]
            elif kind is Send:
                self._send(effect.peer, effect.frame)  # type: ignore[union-attr]
            elif kind is Close:
                effect.peer.outlet.close(effect.code, effect.reason)  # type: ignore[union-attr]
            else:
                raise AssertionError(f"{effect!r} cannot be performed without waiting")

    def _send(self, peer: Peer, frame: bytes) -> None:
        try:
            peer.outlet.send_nowait(frame)
        except trio.WouldBlock:
            self._too_slow(peer)
        except trio.ClosedResourceError:
            self.metrics.drops["closing"] += 1

    def _fanout(self, frame: bytes, peers: list[Peer]) -> None:
        """The hot path: the same bytes into every mailbox; a write that went straight to
        the socket is timed once for all."""
        direct = False
        start = trio.current_time()
        for peer in peers:
            try:
                if peer.outlet.send_nowait(frame):
                    direct = True
            except trio.WouldBlock:
                self._too_slow(peer)
            except trio.ClosedResourceError:
                self.metrics.drops["closing"] += 1
        if direct:
            self.metrics.observe_latency(trio.current_time() - start)

    def _too_slow(self, peer: Peer) -> None:
        self.metrics.drops["slow_consumer"] += 1
        peer.outlet.close(CloseCode.TOO_SLOW, "too slow: outgoing queue overflowed")

    # ------------------------------------------------------------ the backplane's Sink
    def deliver(self, room: str, offset: int, payload: bytes, event: str | None) -> None:
        """A message published in `room` (on any node) for the local subscribers."""
        self._perform_now(self.core.deliver(room, offset, payload, event))

    def presence_changed(self, room: str, user_id: str, info: dict[str, Any] | None,
                         joined: bool) -> None:
        self._perform_now(self.core.presence_changed(room, user_id, info, joined))

    def reset(self, room: str, epoch: str, offset: int, missed: tuple[int, int] | None
              ) -> None:
        self._perform_now(self.core.reset(room, epoch, offset, missed))

    def resumed(self) -> None:
        self.core.resumed()

    def control(self, kind: str, payload: dict[str, Any]) -> None:
        self._perform_soon(self.core.control(kind, payload, trio.current_time()))

    def _perform_soon(self, effects: Effects) -> None:
        """From code that cannot wait (the backplane's callbacks, the sweeper): effects
        that wait (a server-side subscribe, a refresh hook) go to a task of the Router's."""
        if any(isinstance(effect, Ask | CallHook | CallHooks | RunCommand)
               for effect in effects):
            assert self._nursery is not None, "the Router is not running"
            self._nursery.start_soon(self._perform, effects)
        else:
            self._perform_now(effects)

    # ------------------------------------------------------------ the embedding API
    def command(self, name: str) -> Callable[[CommandHandler], CommandHandler]:
        """Register an app's own command type: `@router.command("request_metrics")` over an
        `async def handler(principal, payload) -> reply data`."""
        if name in p.KNOWN_TYPES:
            raise ValueError(f"{name!r} is a built-in command type; choose another name")

        def register(handler: CommandHandler) -> CommandHandler:
            self.commands[name] = handler
            self.core.custom_types.add(name)
            return handler

        return register

    def send_to_connection(self, connection_id: str, data: Any, event: str | None = None
                           ) -> bool:
        """Send a `direct` frame to one connection of this node; False if it is not here."""
        send = self.core.direct(connection_id, data, event, trio.current_time())
        if send is None:
            return False
        self._send(send.peer, send.frame)
        return True

    def stats(self) -> dict[str, Any]:
        """This node's counts (a read-only snapshot)."""
        return {**self.core.stats(), "backplane": self.backplane.name, "ready": self.ready}

    # ------------------------------------------------------------ the sweeper
    def _rewake(self) -> None:
        """Wake the sweeper sooner when something new is due before it planned to."""
        if self._wake is not None:
            due = self.core.deadlines.next_wake()
            if due < self._wake.deadline:  # setting a deadline costs trio bookkeeping
                self._wake.deadline = due

    async def _sweeper(self) -> None:
        """Token expiry (4401), silent connections (4408) and heartbeat pings, on time."""
        while True:
            with trio.move_on_at(self.core.deadlines.next_wake()) as wake:
                self._wake = wake
                await trio.sleep_forever()
            self._wake = None
            now = trio.current_time()
            self._anchor(now)
            self._perform_soon(self.core.tick(now))
