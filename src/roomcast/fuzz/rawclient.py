"""A raw WebSocket client over a Trio stream (wsproto for reading, frames written by hand),
so that it can send what a polite client never would."""

from __future__ import annotations

import contextlib
import os
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from roomcast.codes import CloseCode
from roomcast.fuzz.contract import FuzzFailure


@dataclass
class Closed:
    """How a connection ended: the close frame's code and reason, or ABNORMAL (1006) when
    it dropped without one."""

    code: int
    reason: str


class RawClient:
    """A WebSocket client on wsproto that can also send what a polite client never would:
    text frames that are not UTF-8, fragments, oversized frames."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: deque[Event] = deque()
        self.parts: list[Any] = []
        self.closed: Closed | None = None
        self.answer_pings = True  # False: hand pings to the caller, unanswered (a dead client)

    async def handshake(self, host: str, target: str) -> None:
        await self.stream.send_all(self.ws.send(Request(host=host, target=target)))
        while True:
            event = await self._event()
            if isinstance(event, AcceptConnection):
                return
            if isinstance(event, RejectConnection):
                raise FuzzFailure(f"the server refused the WebSocket handshake with HTTP "
                                  f"{event.status_code}")

    async def _event(self) -> Event:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(bytes(data) or None)
            self.pending.extend(self.ws.events())
            if not data and not self.pending:
                raise trio.BrokenResourceError("connection closed")
        return self.pending.popleft()

    async def send(self, opcode: int, payload: bytes, fragments: int = 1) -> None:
        """One message as `fragments` masked frames (continuations after the first)."""
        size = max(1, -(-len(payload) // fragments))
        chunks = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
        for n, chunk in enumerate(chunks):
            await self.raw_frame(opcode if n == 0 else 0x0, chunk, fin=n == len(chunks) - 1)

    async def raw_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += struct.pack("!BH", 0x80 | 126, n)
        else:
            head += struct.pack("!BQ", 0x80 | 127, n)
        mask = os.urandom(4)
        key = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
            n, "little")
        await self.stream.send_all(head + mask + masked)

    async def receive(self) -> str | bytes | Closed | Pong | Ping:
        """The next whole data message, a pong, or the close (pings are answered, or
        returned when `answer_pings` is off)."""
        if self.closed is not None:
            return self.closed
        while True:
            try:
                event = await self._event()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.closed = Closed(CloseCode.ABNORMAL,
                                     "the connection dropped without a close frame")
                return self.closed
            if isinstance(event, TextMessage | BytesMessage):
                self.parts.append(event.data)
                if event.message_finished:
                    parts, self.parts = self.parts, []
                    return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
            elif isinstance(event, Ping):
                if not self.answer_pings:
                    return event
                if self.ws.state is ConnectionState.OPEN:  # not while closing
                    await self._send_quietly(self.ws.send(event.response()))
            elif isinstance(event, Pong):
                return event
            elif isinstance(event, CloseConnection):
                self.closed = Closed(event.code, event.reason or "")
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    await self._send_quietly(self.ws.send(event.response()))
                return self.closed

    async def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self.stream.send_all(data)

    async def close(self, timeout: float) -> None:
        """A normal close (1000), waiting briefly for the server's answer."""
        with trio.move_on_after(timeout):
            if self.closed is None and self.ws.state is ConnectionState.OPEN:
                await self._send_quietly(self.ws.send(CloseConnection(code=CloseCode.NORMAL)))
                while not isinstance(await self.receive(), Closed):
                    pass
        await trio.aclose_forcefully(self.stream)

