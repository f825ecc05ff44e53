"""Peer: the Trio floor — the HTTP floor (benchmarks/peers/http_floor.py) driven by Trio
instead of one `select.epoll` loop.

Not a server anyone should run. The same hand-framed requests, the same one `os.write` per
delivery and per batch of answers; the only difference is that each connection is a Trio
task that waits with `trio.lowlevel.wait_readable` (as roomcast's connections do) rather
than one loop polling every socket. Beside `http_floor` it shows, in the same run, what
Trio's scheduling costs per request on the machine: the least a Trio server spends on a
publish before it parses, checks or routes anything. The harness runs it in the api, batch
and rooms scenarios (it speaks the raw floor's WebSocket subset too).
"""

from __future__ import annotations

import contextlib
import signal

import trio

from benchmarks.peers.http_floor import HttpFloor
from benchmarks.peers.raw_floor import Conn, main


class TrioFloor(HttpFloor):
    """The HTTP floor with a Trio task per connection."""

    nursery: trio.Nursery

    def run(self) -> None:
        trio.run(self._main)

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._stop_on_signal, nursery.cancel_scope)
            nursery.start_soon(self._accept_loop)

    async def _stop_on_signal(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                scope.cancel()
                return

    async def _accept_loop(self) -> None:
        listen_fd = self.listener.fileno()
        while True:
            await trio.lowlevel.wait_readable(listen_fd)
            if not self.accept():
                await trio.sleep(0.01)  # out of descriptors: the backlog waits a little

    def adopt(self, conn: Conn) -> None:
        self.nursery.start_soon(self._serve, conn)

    async def _serve(self, conn: Conn) -> None:
        """The connection's task: wait until readable, then what the floor does."""
        fd = conn.fd
        with contextlib.suppress(trio.ClosedResourceError):
            while self.conns.get(fd) is conn:
                await trio.lowlevel.wait_readable(fd)
                self.readable(conn)

    def drop(self, conn: Conn) -> None:
        if self.conns.get(conn.fd) is conn:
            trio.lowlevel.notify_closing(conn.sock)  # its task stops waiting on it
        super().drop(conn)

    def want_write(self, conn: Conn) -> None:
        self.nursery.start_soon(self._flush_later, conn)

    def flushed(self, conn: Conn) -> None:
        pass

    async def _flush_later(self, conn: Conn) -> None:
        with contextlib.suppress(trio.ClosedResourceError):
            while conn.out and self.conns.get(conn.fd) is conn:
                await trio.lowlevel.wait_writable(conn.fd)
                self.flush(conn)


if __name__ == "__main__":
    main(TrioFloor, __doc__.splitlines()[0])
