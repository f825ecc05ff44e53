"""A raw-socket WebSocket client for the load generator: one epoll loop, many sockets.

Per frame it does as little as it can: it walks frame headers in the received bytes, counts
`message` frames by their prefix and parses a send timestamp only from sampled ones. Client
frames are masked as RFC 6455 requires (a random key per connection), so the server does
the same unmasking work it would do for a browser.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import time
from array import array
from collections import Counter

MESSAGE = b'{"type":"message"'
PUBLISHED = b'{"type":"published"'
SUBSCRIBED = b'{"type":"subscribed"'
CONNECTED = b'{"type":"connected"'
ERROR = b'{"type":"error"'
STAMP = b'"t":'
OFFSET = b'"offset":'

CONNECTING, HANDSHAKE, OPEN, CLOSED = range(4)
SAMPLE_NONE, SAMPLE_ALL, SAMPLE_CHUNK = range(3)

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP
_RECV = 64 * 1024  # above glibc's mmap threshold every recv() would cost an mmap: 15x slower
_MAX_HEAD = 16 * 1024


def upgrade_request(host: str, port: int, path: str, token: str | None) -> bytes:
    """The HTTP/1.1 upgrade request; the token goes in the query string as a browser's would."""
    target = f"{path}?token={token}" if token else path
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def client_frame(payload: bytes, mask: bytes, opcode: int = 1) -> bytes:
    """One final, masked client frame (text by default)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    if not n:
        return head + mask
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + body


def close_frame(code: int, mask: bytes) -> bytes:
    return client_frame(code.to_bytes(2, "big"), mask, opcode=8)


def stamp_payload(size: int, now_ns: int) -> bytes:
    """A JSON object of exactly `size` bytes carrying its send time: {"t":ns,"p":"xx…"}."""
    head = b'{"t":%d,"p":"' % now_ns
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


class Conn:
    """One client connection's state; everything the loop needs, nothing more."""

    __slots__ = (
        "attempts", "buf", "close_code", "epoch", "fd", "index", "mask", "messages", "offset",
        "out", "pings", "room", "sock", "state", "t_open", "t_start", "t_subscribed", "token",
        "user",
    )

    def __init__(self, index: int, room: str = "", token: str | None = None) -> None:
        self.index = index
        self.room = room
        self.token = token
        self.user = ""
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = CLOSED
        self.buf = b""
        self.out = b""
        self.mask = os.urandom(4)
        self.messages = 0
        self.pings = 0
        self.close_code: int | None = None
        self.t_start = 0
        self.t_open = 0
        self.t_subscribed = 0
        self.attempts = 0
        self.offset = 0
        self.epoch = ""


class Loop:
    """An epoll loop over many Conns. Subclasses override the `on_*` hooks."""

    def __init__(self, port: int, host: str = "127.0.0.1", path: str = "/ws",
                 sample: int = SAMPLE_NONE, track_offsets: bool = False,
                 rcvbuf: int = 0) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.sample = sample
        self.track_offsets = track_offsets
        self.rcvbuf = rcvbuf
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.samples = array("q")  # latencies, ns
        self.messages = 0
        self.failures: Counter[str] = Counter()
        self.closes: Counter[int] = Counter()

    # ------------------------------------------------------------ hooks
    def on_text(self, conn: Conn, payload: bytes) -> None:
        """A text frame that is not a `message` (connected, subscribed, published, error)."""

    def on_closed(self, conn: Conn, code: int | None, why: str) -> None:
        """The connection ended: a close frame (`code`), EOF, reset or a refused connect."""

    def on_message_offset(self, conn: Conn, offset: int) -> None:
        """With track_offsets: the offset of each message received."""

    # ------------------------------------------------------------ actions
    def connect(self, conn: Conn) -> None:
        """Start a non-blocking connect; the handshake follows when it completes."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.setblocking(False)
        conn.sock = sock
        conn.fd = sock.fileno()
        conn.state = CONNECTING
        conn.buf = b""
        conn.out = b""
        conn.close_code = None
        conn.t_start = time.monotonic_ns()
        conn.attempts += 1
        self.conns[conn.fd] = conn
        err = sock.connect_ex((self.host, self.port))
        if err in (0, errno.EINPROGRESS):
            self.ep.register(conn.fd, _OUT | _ERR)
        else:
            self._lost(conn, None, errno.errorcode.get(err, str(err)))

    def send(self, conn: Conn, data: bytes) -> None:
        """Write now as far as the socket takes it; keep the rest for EPOLLOUT."""
        if conn.state == CLOSED or conn.sock is None:
            return
        if conn.out:
            conn.out += data
            return
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lost(conn, None, type(exc).__name__)
            return
        if sent < len(data):
            conn.out = data[sent:]
            self.ep.modify(conn.fd, _IN | _OUT | _ERR)

    def send_text(self, conn: Conn, payload: bytes) -> None:
        self.send(conn, client_frame(payload, conn.mask))

    def abort(self, conn: Conn) -> None:
        """Close at once with a reset (no TIME_WAIT left behind)."""
        if conn.sock is None:
            return
        self.conns.pop(conn.fd, None)
        with contextlib.suppress(OSError, ValueError):
            self.ep.unregister(conn.fd)
        with contextlib.suppress(OSError):
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.sock.close()
        conn.sock = None
        conn.state = CLOSED

    def abort_all(self) -> None:
        for conn in list(self.conns.values()):
            self.abort(conn)

    # ------------------------------------------------------------ the loop
    def poll(self, timeout: float) -> None:
        """Wait up to `timeout` seconds and handle whatever is ready."""
        conns = self.conns
        for fd, ev in self.ep.poll(timeout, 4096):
            conn = conns.get(fd)
            if conn is None:
                continue
            if conn.state == CONNECTING:
                self._connected(conn, ev)
                continue
            if ev & _OUT and conn.out:
                self._flush(conn)
            if ev & (_IN | _ERR) and conn.state != CLOSED:
                self._readable(conn)

    def _connected(self, conn: Conn, ev: int) -> None:
        assert conn.sock is not None
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err or (ev & _ERR and not ev & _OUT):
            self._lost(conn, None, errno.errorcode.get(err, "connect failed"))
            return
        conn.state = HANDSHAKE
        self.ep.modify(conn.fd, _IN | _ERR)
        self.send(conn, upgrade_request(self.host, self.port, self.path, conn.token))

    def _flush(self, conn: Conn) -> None:
        assert conn.sock is not None
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(conn, None, type(exc).__name__)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self.ep.modify(conn.fd, _IN | _ERR)

    def _lost(self, conn: Conn, code: int | None, why: str) -> None:
        if code is not None:
            self.closes[code] += 1
        elif conn.state in (CONNECTING, HANDSHAKE):
            self.failures[why] += 1
        self.abort(conn)
        self.on_closed(conn, code, why)

    def _readable(self, conn: Conn) -> None:
        assert conn.sock is not None
        try:
            data = conn.sock.recv(_RECV)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(conn, conn.close_code, type(exc).__name__)
            return
        if not data:
            self._lost(conn, conn.close_code, "eof")
            return
        if conn.state == HANDSHAKE:
            data = conn.buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > _MAX_HEAD:
                    self._lost(conn, None, "handshake too long")
                else:
                    conn.buf = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self._lost(conn, None, "http " + data[9:12].decode("latin-1"))
                return
            conn.state = OPEN
            conn.buf = b""
            data = data[end + 4:]
            if not data:
                return
        self._frames(conn, data)

    def _frames(self, conn: Conn, data: bytes) -> None:
        """Walk the frames in `data`; count messages, sample stamps, hand the rest on."""
        buf = conn.buf + data if conn.buf else data
        end = len(buf)
        pos = 0
        count = 0
        sample = self.sample
        now = time.monotonic_ns() if sample else 0
        while end - pos >= 2:
            n = buf[pos + 1] & 0x7F
            if n < 126:
                start = pos + 2
            elif n == 126:
                if end - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            else:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 10], "big")
                start = pos + 10
            stop = start + n
            if stop > end:
                break
            op = buf[pos] & 0x0F
            if op == 1 and buf.startswith(MESSAGE, start):
                count += 1
                if sample:
                    i = buf.find(STAMP, start, stop)
                    if i >= 0:
                        j = buf.find(b",", i, stop)
                        self.samples.append(now - int(buf[i + 4:j]))
                    if sample == SAMPLE_CHUNK:
                        sample = SAMPLE_NONE
                if self.track_offsets:
                    i = buf.find(OFFSET, start, stop) + 9
                    j = buf.find(b",", i, stop)
                    self.on_message_offset(conn, int(buf[i:j]))
            elif op == 1:
                self.on_text(conn, buf[start:stop])
            elif op == 9:
                conn.pings += 1
                self.send(conn, client_frame(buf[start:stop], conn.mask, opcode=10))
            elif op == 8:
                code = int.from_bytes(buf[start:start + 2], "big") if n >= 2 else 1005
                conn.close_code = code
                conn.messages += count
                self.messages += count
                self._lost(conn, code, "close frame")
                return
            pos = stop
        conn.buf = buf[pos:] if pos < end else b""
        conn.messages += count
        self.messages += count
