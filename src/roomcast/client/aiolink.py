"""The asyncio client's IO on `websockets`: opening a WebSocket (every way that can fail
turned into a CloseInfo), one open connection with its pending commands, reading its
frames, noticing when it stops answering, and the bounded queue of events for the app."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from roomcast.client.backoff import DEAD_LINK
from roomcast.client.errors import ConnectionLost
from roomcast.client.events import CloseInfo, Event
from roomcast.codes import CloseCode

__all__ = ["Link", "Mailbox", "closed", "open_websocket", "read_frames", "watch_pings"]

logger = logging.getLogger("roomcast.client")

#: HTTP statuses of a refused handshake that will not fix themselves: do not hammer.
_REFUSED = {401: CloseCode.UNAUTHORIZED, 403: CloseCode.FORBIDDEN, 404: CloseCode.FORBIDDEN}


class EndOfEvents(Exception):
    """The mailbox was closed and is empty."""


class Mailbox:
    """Events for `messages()`, at most `size` held: `put` waits while it is full (so the
    reader stops reading the socket: backpressure), `get` waits while it is empty."""

    def __init__(self, size: int) -> None:
        self._items: collections.deque[Event] = collections.deque()
        self._size = max(1, size)
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed = False

    async def put(self, item: Event) -> None:
        """Add an event, waiting for room; dropped when the mailbox is closed."""
        while len(self._items) >= self._size and not self.closed:
            self._writable.clear()
            await self._writable.wait()
        if self.closed:
            return
        self._items.append(item)
        self._readable.set()

    async def get(self) -> Event:
        """The next event; EndOfEvents once closed and empty."""
        while not self._items:
            if self.closed:
                raise EndOfEvents
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        self._writable.set()
        return item

    def close(self) -> None:
        """No more events: readers end after what is held, writers stop waiting."""
        self.closed = True
        self._readable.set()
        self._writable.set()


class Link:
    """One WebSocket connection of the client's life."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen = asyncio.Event()  # set by every frame: the link is alive
        self.handing_off = False  # waiting on the app, not on the server
        self.close: CloseInfo | None = None
        self.ended = asyncio.Event()

    def end(self, close: CloseInfo) -> None:
        """End this connection (its tasks are cancelled) and remember why."""
        if self.close is None:
            self.close = close
        self.ended.set()

    async def send(self, frame: dict[str, Any]) -> None:
        """Send a frame; ConnectionLost when this connection is gone."""
        try:
            await self.ws.send(json.dumps(frame, separators=(",", ":")))
        except ConnectionClosed:
            raise ConnectionLost("the connection closed before the command was sent") from None


def closed(exc: ConnectionClosed) -> CloseInfo:
    """Why websockets says the connection closed (1006 without a close frame)."""
    if exc.rcvd is None:
        return CloseInfo(CloseCode.ABNORMAL, "")
    return CloseInfo(exc.rcvd.code or CloseCode.ABNORMAL, exc.rcvd.reason or "")


async def open_websocket(url: str, token: str, timeout: float, max_message_size: int
                         ) -> tuple[ClientConnection, str | bytes] | CloseInfo:
    """Open a WebSocket to `url` with the token as a Bearer header and read its first
    frame within `timeout` seconds; or why that failed, as the close code to act on."""
    ws: ClientConnection | None = None
    try:
        async with asyncio.timeout(timeout):
            ws = await ws_connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                  max_size=max_message_size, ping_interval=None,
                                  open_timeout=None, close_timeout=1.0, compression=None,
                                  proxy=None)
            return ws, await ws.recv()
    except TimeoutError:
        if ws is not None:
            ws.transport.abort()
        return CloseInfo(DEAD_LINK, f"no `connected` frame within {timeout} s")
    except ConnectionClosed as exc:
        return closed(exc)
    except InvalidStatus as exc:
        status = exc.response.status_code
        body = (exc.response.body or b"").decode(errors="replace")[:200]
        # A wrong path, origin or key is not a passing problem: stop rather than retry.
        return CloseInfo(_REFUSED.get(status, CloseCode.ABNORMAL),
                         f"HTTP {status} {body}".strip())
    except (OSError, InvalidHandshake) as exc:
        return CloseInfo(CloseCode.ABNORMAL, f"cannot connect to {url}: {exc}")


async def read_frames(link: Link,
                      handle: Callable[[Link, dict[str, Any]], Awaitable[None]]) -> None:
    """Read the link's frames and give each JSON object to `handle`, until it closes."""
    try:
        while True:
            try:
                text = await link.ws.recv()
            except ConnectionClosed as exc:
                link.end(closed(exc))
                return
            link.seen.set()
            try:
                frame = json.loads(text)
            except ValueError:
                logger.warning("the server sent a frame that is not JSON: %.100r", text)
                continue
            if isinstance(frame, dict):
                await handle(link, frame)
    finally:
        link.end(CloseInfo(CloseCode.ABNORMAL, "the connection ended"))


async def watch_pings(link: Link, interval: float | None, timeout: float,
                      next_id: Callable[[], int]) -> None:
    """Ping every `interval` seconds; end the link as dead when no frame at all arrives
    within `timeout` after a ping (unless the client is waiting on the app)."""
    if not interval:
        return
    while True:
        await asyncio.sleep(interval)
        link.seen.clear()
        try:
            await link.send({"type": "ping", "id": f"ping-{next_id()}"})
        except ConnectionLost:
            return
        try:
            async with asyncio.timeout(timeout):
                await link.seen.wait()
        except TimeoutError:
            if not link.handing_off:
                link.end(CloseInfo(DEAD_LINK, f"no answer to a ping within {timeout} s"))
                return
