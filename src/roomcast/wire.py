"""The byte stream under each WebSocket: replays the handshake bytes already read,
stamps `last_seen` on every read, and serialises every write with one lock."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Protocol

import trio


class _Seen(Protocol):
    last_seen: float


class WireStream(trio.abc.Stream):
    """A trio Stream wrapper shared by trio-websocket's own writes (pongs, close) and ours."""

    def __init__(self, stream: trio.abc.Stream, replay: bytes = b"") -> None:
        self._stream = stream
        self._replay = replay
        self._lock = trio.Lock()
        self.on_receive: _Seen | None = None
        self.broken = False  # a write was cut short: never write again
        self.close_sent = False  # a close frame has gone out
        # The WebSocket's close reason (code, reason) once it has one; see aclose.
        self.close_reason: Callable[[], object] | None = None
        sock = getattr(stream, "socket", None)
        self._fd: int = sock.fileno() if sock is not None else -1

    def write_nowait(self, data: bytes) -> int:
        """Write what the socket takes now, without waiting or yielding: the bytes written
        (0 when none fit), or -1 when it cannot be tried now (a write holds the lock, a
        close frame has gone out, or this is not a socket). A dead socket raises
        BrokenResourceError."""
        if self._fd < 0 or self.broken or self.close_sent or self._lock.locked():
            return -1
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self.broken = True
            raise trio.BrokenResourceError(str(exc)) from exc

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._replay:
            data, self._replay = self._replay, b""
            return data
        data = bytes(await self._stream.receive_some(max_bytes))
        if self.on_receive is not None:
            self.on_receive.last_seen = trio.current_time()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.broken:
            raise trio.BrokenResourceError("an earlier write was cut short")
        async with self._lock:
            if data[:1] == b"\x88":
                self.close_sent = True
            await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Close the socket. When the WebSocket layer fails a connection by itself (a text
        frame that is not UTF-8: 1007, a malformed frame: 1002) trio-websocket closes without
        a close frame; send one first, so the client learns why (RFC 6455 §7.1.7)."""
        self._fd = -1  # the number may go to the next socket: never write to it
        reason = self.close_reason() if self.close_reason is not None else None
        code = getattr(reason, "code", None)
        if isinstance(code, int) and code not in (1005, 1006, 1015) and not (
            self.close_sent or self.broken
        ):
            text = str(getattr(reason, "reason", None) or "").encode()[:120]
            with trio.move_on_after(1.0):
                try:
                    async with self._lock:
                        await self._stream.send_all(struct.pack("!BBH", 0x88, 2 + len(text),
                                                                code) + text)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
            self.close_sent = True
        await self._stream.aclose()
