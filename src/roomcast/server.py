"""The server: listeners, the supervision of connection actors, and graceful shutdown.

A `Server` owns its listening sockets, its ports, the draining flag and the count of live
sockets (closing handshakes included). Each accepted connection runs as its own task in
the server's nursery — the front door, then the connection actor — so a failure in one
never touches another. `open_router` puts a Router and its Server together: the
embedding API (see docs/embedding.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from roomcast import transport
from roomcast.backplane import Backplane
from roomcast.codes import CloseCode
from roomcast.connection import Connection
from roomcast.frontdoor import Door, front_door, log_failure
from roomcast.http import serve_http
from roomcast.limits import HeldBytesBudget, trim_heap
from roomcast.log import event
from roomcast.router import Router
from roomcast.settings import Settings

TRIM_AFTER = 32 * 1024 * 1024  # freed message bytes worth giving back to the system


class Server:
    """Serves one Router's WebSocket and HTTP listeners until shut down."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.ws_port: int | None = None
        self.http_port: int | None = None
        self.sockets = 0  # connections being served, closing handshakes included
        self.door = Door(router.settings)
        # bytes all connections hold in unfinished messages (abuse: many trickled messages)
        self.held: HeldBytesBudget[Connection] = HeldBytesBudget(router.settings.max_held_bytes)
        self._shutdown = trio.Event()
        self._drained = trio.Event()

    @property
    def draining(self) -> bool:
        return self.door.draining

    def shutdown(self) -> None:
        """Begin a graceful shutdown: stop accepting and close everyone with 1001."""
        self._shutdown.set()

    async def wait_drained(self) -> None:
        """Return once no connection is left, closing handshakes included."""
        if self.router.core.peers or self.sockets:
            self._drained = trio.Event()
            await self._drained.wait()

    def _check_drained(self) -> None:
        if not self.router.core.peers and not self.sockets:
            self._drained.set()

    async def handle(self, stream: trio.abc.Stream, peer: tuple[str, int] | None = None
                     ) -> None:
        """One TCP connection, from its request head to its closing handshake (`peer`: its
        address, when the caller knows it); nothing raised here reaches the listener."""
        remote_ip, port = peer[:2] if peer is not None else _peer(stream)
        remote = f"{remote_ip}:{port}"
        self.sockets += 1
        try:
            admitted = await front_door(self.router, stream, remote, remote_ip, self.door)
            if admitted is not None:  # the handshake's state is gone; the session holds little
                connection, reader, rest = admitted
                await connection.run(self.router, reader, rest, self.held)
        except Exception:
            log_failure(self.router, remote)
        finally:
            self.sockets -= 1
            self._check_drained()
            await trio.aclose_forcefully(stream)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Listen until shutdown(), then drain: close everyone with 1001, spread out."""
        router = self.router
        settings = router.settings
        async with trio.open_nursery() as handlers:
            listeners = await transport.open_listeners(settings.host, settings.port,
                                                       reuse_port=settings.workers > 1)
            self.ws_port = listeners[0].socket.getsockname()[1]
            accepting = trio.CancelScope()

            async def accept() -> None:
                with accepting:
                    async with trio.open_nursery() as loops:
                        for listener in listeners:
                            loops.start_soon(transport.accept_loop, listener, self.handle,
                                             handlers, router.metrics)

            handlers.start_soon(accept)
            handlers.start_soon(self._housekeeping)
            if settings.http_port:
                self.http_port = await handlers.start(serve_http, router)
            event("listening", url=f"ws://{settings.host}:{self.ws_port}{settings.path}",
                  http=f"http://{settings.host}:{self.http_port}/" if self.http_port else "off",
                  node=settings.node, backplane=router.backplane.name)
            task_status.started()
            await self._shutdown.wait()
            accepting.cancel()
            for listener in listeners:
                await listener.aclose()
            await self.drain()
            handlers.cancel_scope.cancel()

    async def _housekeeping(self) -> None:
        """Every log_throttle_interval: the refusal lines held back (with their counts), and
        memory freed by unfinished messages given back to the system."""
        interval = self.router.settings.log_throttle_interval
        while True:
            await trio.sleep(interval)
            for reason, count in self.door.refusals.due(trio.current_time()):
                event("refused", reason=reason, count=count)
            if self.held.released >= TRIM_AFTER:
                self.held.take_released()
                trim_heap()

    async def drain(self) -> None:
        """Close every connection with 1001, spread evenly over shutdown_grace seconds."""
        self.door.draining = True
        peers = list(self.router.core.peers.values())
        grace = self.router.settings.shutdown_grace
        event("draining", connections=len(peers), grace=grace)
        start = trio.current_time()
        for i, peer in enumerate(peers):
            if grace:
                await trio.sleep_until(start + grace * i / len(peers))
            if peer.outlet is not None:
                peer.outlet.close(CloseCode.GOING_AWAY, "server shutting down")
        with trio.move_on_after(self.router.settings.handshake_timeout + 1):
            await self.wait_drained()
        event("drained", left=len(self.router.core.peers),
              seconds=f"{trio.current_time() - start:.2f}")


def _peer(stream: trio.abc.Stream) -> tuple[str, int]:
    sock = getattr(stream, "socket", None)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        host, port = "?", 0
    return str(host), int(port)


async def handle_tcp(router: Router, stream: trio.abc.Stream,
                     peer: tuple[str, int] | None = None) -> None:
    """Serve one stream (a socket or any trio stream) as the Router's server would."""
    server = router.server
    if not isinstance(server, Server):
        raise RuntimeError("this Router has no server: make it with roomcast.open_router")
    await server.handle(stream, peer)


@asynccontextmanager
async def open_router(
    settings: Settings | None = None, backplane: Backplane | None = None
) -> AsyncIterator[Router]:
    """A running Router (its backplane and sweeper) with its Server attached, for as long
    as the block lasts; `await router.serve()` runs the listeners."""
    router = Router(settings or Settings(), backplane)
    router.server = Server(router)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        try:
            yield router
        finally:
            nursery.cancel_scope.cancel()
