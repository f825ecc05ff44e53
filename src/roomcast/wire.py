"""The byte stream under each WebSocket: replays the handshake bytes already read,
stamps `last_seen` on every read, and serialises every write with one lock."""

from __future__ import annotations

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
            await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()
