"""Peer: the HTTP floor — the raw floor (benchmarks/peers/raw_floor.py) that also takes
`POST /api/publish` and `POST /api/batch` over keep-alive HTTP on the same port.

Not a server anyone should run: one `select.epoll` loop, requests framed by hand
(`Content-Length` only), no authentication, no validation beyond what keeps it from
crashing. A publish builds its `message` frame once and writes it to each subscriber
with one `os.write`; the answers to every request a read brought go out in one write.
It shows, in the same run as roomcast and the FastAPI peer, what receiving a request,
one write per delivery and one write per answer cost on the machine in Python.
"""

from __future__ import annotations

import json
import time
from typing import Any

from benchmarks.peers.raw_floor import _MAX_HEAD, Conn, Floor, _dumps, main, text_frame


def _answer(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(body)) + body


class HttpFloor(Floor):
    """The floor, plus keep-alive HTTP publishes on connections that do not upgrade."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.http: set[int] = set()

    def drop(self, conn: Conn) -> None:
        self.http.discard(conn.fd)
        super().drop(conn)

    def readable(self, conn: Conn) -> None:
        if conn.open:
            super().readable(conn)
            return
        if conn.fd not in self.http:
            head_end = conn.buf.find(b"\r\n\r\n")
            if head_end < 0:
                peek = conn.buf
                try:
                    data = conn.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    self.drop(conn)
                    return
                if not data:
                    self.drop(conn)
                    return
                conn.buf = peek + data
                head_end = conn.buf.find(b"\r\n\r\n")
                if head_end < 0:
                    if len(conn.buf) > _MAX_HEAD:
                        self.drop(conn)
                    return
            if b"upgrade: websocket" in conn.buf[:head_end].lower():
                buf, conn.buf = conn.buf, b""
                if self.upgrade(conn, buf[:head_end]) and buf[head_end + 4:]:
                    self.frames(conn, buf[head_end + 4:])
                return
            self.http.add(conn.fd)
        else:
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.drop(conn)
                return
            if not data:
                self.drop(conn)
                return
            conn.buf = conn.buf + data if conn.buf else data
        self.requests(conn)

    def requests(self, conn: Conn) -> None:
        """Answer every whole request in the buffer, in one write."""
        buf = conn.buf
        out = []
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            at = head.lower().find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(buf) < end + 4 + length:
                break
            body = buf[end + 4:end + 4 + length]
            buf = buf[end + 4 + length:]
            out.append(_answer(self.handle(head.split(b" ", 2)[1], body)))
        conn.buf = buf
        if out and not self.write(conn, b"".join(out)):
            self.drop(conn)

    def handle(self, path: bytes, body: bytes) -> bytes:
        try:
            command: Any = json.loads(body) if body else {}
        except ValueError:
            return b'{"error":"bad_request"}'
        if path == b"/api/publish":
            return b'{"offset":%d,"duplicate":false}' % self.deliver(command)
        if path == b"/api/batch":
            offsets = [self.deliver(c.get("params") or {}) for c in command.get("commands", ())]
            return b'{"replies":[%b]}' % b",".join(
                b'{"result":{"offset":%d,"duplicate":false}}' % o for o in offsets)
        return b'{"status":"ok"}'

    def deliver(self, command: dict[str, Any]) -> int:
        """One message frame, one os.write per subscriber (via the floor's write)."""
        room = command.get("room")
        if not isinstance(room, str):
            return 0
        offset = self.offsets[room] = self.offsets.get(room, 0) + 1
        frame = text_frame(_dumps({"type": "message", "room": room, "offset": offset,
                                   "event": command.get("event"), "data": command.get("data"),
                                   "sender": None, "ts": time.time()}))
        for member in list(self.rooms.get(room, ())):
            if not self.write(member, frame):
                self.drop(member)
        return offset


if __name__ == "__main__":
    main(HttpFloor, __doc__.splitlines()[0])
