"""Peer: the floor — not a server anyone should run; the lower bound of one write per
delivery in Python.

A single-threaded `select.epoll` loop over non-blocking sockets and no WebSocket library:
the HTTP upgrade head is parsed by hand and answered with the Sec-WebSocket-Accept, masked
client frames are parsed just enough for the harness's clients (small unfragmented frames:
text, close, ping), and a publish builds its `message` frame once and hands it to each
subscriber with one `os.write`. Only when a write is partial or would block is the rest
kept per connection and flushed on EPOLLOUT, so it stays correct, but the measured path is
one system call per delivery and next to no Python around it.

It exists to show, in the same run, what one write per delivery costs on the machine: a
server that writes once per delivery cannot spend less CPU per delivery than this. It speaks
the harness's minimal protocol — `connected` first, then `subscribe` -> `subscribed`,
`publish` -> `published` plus `message` frames shaped like roomcast's — and nothing else:
no authentication (the token in the query string is ignored), no validation beyond what
keeps it from crashing, no limits, no heartbeats, no graceful close. The harness runs it
in the fan-out, max-rate and rooms scenarios.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import select
import signal
import socket
import sys
import time
from typing import Any

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_RECV = 64 * 1024
_MAX_HEAD = 16 * 1024  # a longer upgrade head is dropped
_MAX_FRAME = 1 << 20  # a longer client frame is dropped (the other peers' max_size)
_MAX_OUT = 64 << 20  # a connection this far behind is dropped rather than grown further


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked server text frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


CONNECTED = text_frame(b'{"type":"connected"}')


class Conn:
    """One client connection: its socket, what is unread, and what is unwritten."""

    __slots__ = ("buf", "fd", "open", "out", "rooms", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.open = False  # the upgrade has been answered
        self.buf = b""
        self.out = bytearray()  # bytes a write did not take; flushed on EPOLLOUT
        self.rooms: set[str] = set()


class Floor:
    def __init__(self, port: int) -> None:
        self.ep = select.epoll()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(4096)
        self.listener.setblocking(False)
        self.ep.register(self.listener.fileno(), _IN)
        self.conns: dict[int, Conn] = {}
        self.rooms: dict[str, set[Conn]] = {}
        self.offsets: dict[str, int] = {}
        # SIGTERM / SIGINT: the C handler writes to this socket, which wakes the loop.
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.ep.register(self.wake_r.fileno(), _IN)

    # ------------------------------------------------------------ the loop
    def run(self) -> None:
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)
        listen_fd = self.listener.fileno()
        wake_fd = self.wake_r.fileno()
        conns = self.conns
        while True:
            for fd, ev in self.ep.poll(-1, 1024):
                if fd == listen_fd:
                    self.accept()
                    continue
                if fd == wake_fd:
                    return
                conn = conns.get(fd)
                if conn is None:
                    continue
                if ev & _OUT:
                    self.flush(conn)
                    if conns.get(fd) is not conn:
                        continue
                if ev & ~_OUT:  # EPOLLIN, EPOLLHUP or EPOLLERR: a read says which
                    self.readable(conn)

    def close(self) -> None:
        for conn in list(self.conns.values()):
            conn.sock.close()
        self.conns.clear()
        self.listener.close()
        self.ep.close()

    def accept(self) -> bool:
        """Take every waiting connection; False when out of descriptors or memory."""
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:  # EMFILE and the like: leave it in the backlog for now
                return False
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(sock)
            self.conns[conn.fd] = conn
            self.adopt(conn)

    def adopt(self, conn: Conn) -> None:
        """A new connection: watch it."""
        self.ep.register(conn.fd, _IN)

    def drop(self, conn: Conn) -> None:
        if self.conns.pop(conn.fd, None) is None:
            return
        for room in conn.rooms:
            members = self.rooms.get(room)
            if members is not None:
                members.discard(conn)
                if not members:
                    del self.rooms[room]
        with contextlib.suppress(OSError, ValueError):
            self.ep.unregister(conn.fd)
        conn.sock.close()

    # ------------------------------------------------------------ writing
    def write(self, conn: Conn, data: bytes) -> bool:
        """Write `data` now, keeping what the socket does not take; False if it is gone."""
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
            self.want_write(conn)
        return True

    def want_write(self, conn: Conn) -> None:
        """The socket is full: flush the rest once it is writable."""
        self.ep.modify(conn.fd, _IN | _OUT)

    def flushed(self, conn: Conn) -> None:
        """Everything kept has been written."""
        self.ep.modify(conn.fd, _IN)

    def flush(self, conn: Conn) -> None:
        try:
            n = os.write(conn.fd, conn.out)
        except BlockingIOError:
            return
        except OSError:
            self.drop(conn)
            return
        del conn.out[:n]
        if not conn.out:
            self.flushed(conn)

    # ------------------------------------------------------------ reading
    def readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.drop(conn)
            return
        if not data:
            self.drop(conn)
            return
        buf = conn.buf + data if conn.buf else data
        if not conn.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self.drop(conn)
                else:
                    conn.buf = buf
                return
            if not self.upgrade(conn, buf[:end]):
                return
            buf = buf[end + 4:]
        conn.buf = b""
        if buf:
            self.frames(conn, buf)

    def upgrade(self, conn: Conn, head: bytes) -> bool:
        """Answer the upgrade with 101 and `connected`; anything else gets a 400 and goes."""
        key = b""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
                break
        if not key:
            self.write(conn, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                       b"Connection: close\r\n\r\n")
            self.drop(conn)
            return False
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        conn.open = True
        ok = self.write(conn, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                        + b"\r\n\r\n" + CONNECTED)
        if not ok:
            self.drop(conn)
        return ok

    def frames(self, conn: Conn, buf: bytes) -> None:
        """Handle every complete frame in `buf`; keep the incomplete tail."""
        end = len(buf)
        pos = 0
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 4], "big")
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 10], "big")
                head = 10
            if not b1 & 0x80 or not b0 & 0x80 or n > _MAX_FRAME:
                self.drop(conn)  # unmasked, fragmented or too long: not the harness's client
                return
            start = pos + head + 4
            stop = start + n
            if stop > end:
                break
            mask = buf[pos + head:start]
            payload = buf[start:stop]
            if n:  # unmask: one XOR of two big ints
                key = (mask * (n // 4 + 1))[:n]
                payload = (int.from_bytes(payload, "little")
                           ^ int.from_bytes(key, "little")).to_bytes(n, "little")
            pos = stop
            op = b0 & 0x0F
            if op == 1 or op == 2:
                self.command(conn, payload)
            elif op == 8:  # close: echo the code, then go
                self.write(conn, bytes((0x88, len(payload[:2]))) + payload[:2])
                self.drop(conn)
                return
            elif op == 9:
                self.write(conn, bytes((0x8A, len(payload[:125]))) + payload[:125])
            if self.conns.get(conn.fd) is not conn:
                return
        conn.buf = buf[pos:] if pos < end else b""

    # ------------------------------------------------------------ the protocol
    def command(self, conn: Conn, payload: bytes) -> None:
        try:
            command = json.loads(payload)
        except ValueError:
            return
        if not isinstance(command, dict):
            return
        kind = command.get("type")
        if kind == "publish":
            self.publish(conn, command)
        elif kind == "subscribe":
            names = [r for r in command.get("rooms") or () if isinstance(r, str)]
            for room in names:
                self.rooms.setdefault(room, set()).add(conn)
                conn.rooms.add(room)
            reply = {"type": "subscribed", "id": command.get("id"),
                     "rooms": {r: {"ok": True, "offset": self.offsets.get(r, 0)} for r in names}}
            if not self.write(conn, text_frame(_dumps(reply))):
                self.drop(conn)

    def publish(self, conn: Conn, command: dict[str, Any]) -> None:
        room = command.get("room")
        if not isinstance(room, str):
            return
        offset = self.offsets[room] = self.offsets.get(room, 0) + 1
        frame = text_frame(_dumps({"type": "message", "room": room, "offset": offset,
                                   "event": command.get("event"), "data": command.get("data"),
                                   "sender": None, "ts": time.time()}))
        size = len(frame)
        write = os.write
        dead = []
        # The measured path: one os.write per subscriber, unless it has bytes waiting.
        for member in self.rooms.get(room, ()):
            if member.out:
                member.out += frame
                if len(member.out) > _MAX_OUT:
                    dead.append(member)
                continue
            try:
                n = write(member.fd, frame)
            except BlockingIOError:
                n = 0
            except OSError:
                dead.append(member)
                continue
            if n < size:
                member.out += frame[n:]
                self.ep.modify(member.fd, _IN | _OUT)
        for member in dead:
            self.drop(member)
        if self.conns.get(conn.fd) is conn and not self.write(conn, text_frame(_dumps(
                {"type": "published", "id": command.get("id"), "room": room,
                 "offset": offset}))):
            self.drop(conn)


def main(kind: type[Floor], description: str) -> None:
    """Run a floor of `kind` on the port the command line names, until SIGTERM."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    floor = kind(parser.parse_args().port)
    try:
        floor.run()
    finally:
        floor.close()
    sys.exit(0)


if __name__ == "__main__":
    main(Floor, __doc__.splitlines()[0])
