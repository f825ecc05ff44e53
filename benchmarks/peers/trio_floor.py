"""Peer: the Trio floor — the HTTP floor (benchmarks/peers/http_floor.py) driven by Trio
instead of one `select.epoll` loop.

Not a server anyone should run. The same hand-framed requests, the same one `os.write` per
delivery and per batch of answers; the only difference is that each connection is a Trio
task that waits with `trio.lowlevel.wait_readable` (as roomcast's connections do) rather
than one loop polling every socket. Beside `http_floor` it shows, in the same run, what
Trio's scheduling costs per request on the machine: the least a Trio server spends on a
publish before it parses, checks or routes anything.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys

import trio

from benchmarks.peers.http_floor import HttpFloor
from benchmarks.peers.raw_floor import _MAX_OUT, Conn


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
            while True:
                try:
                    sock, _ = self.listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # EMFILE and the like: leave it in the backlog for now
                    await trio.sleep(0.01)
                    break
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn = Conn(sock)
                self.conns[conn.fd] = conn
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

    def write(self, conn: Conn, data: bytes) -> bool:
        """Write now; what the socket does not take goes later, from a task of its own."""
        if conn.out:
            conn.out += data
            return len(conn.out) <= _MAX_OUT
        try:
            n = os.write(conn.fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            return False
        if n < len(data):
            conn.out += data[n:]
            self.nursery.start_soon(self._flush_later, conn)
        return True

    async def _flush_later(self, conn: Conn) -> None:
        with contextlib.suppress(trio.ClosedResourceError):
            while conn.out and self.conns.get(conn.fd) is conn:
                await trio.lowlevel.wait_writable(conn.fd)
                self.flush(conn)

    def flush(self, conn: Conn) -> None:
        try:
            n = os.write(conn.fd, conn.out)
        except BlockingIOError:
            return
        except OSError:
            self.drop(conn)
            return
        del conn.out[:n]


def main(port: int) -> None:
    floor = TrioFloor(port)
    try:
        floor.run()
    finally:
        floor.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    main(parser.parse_args().port)
    sys.exit(0)
