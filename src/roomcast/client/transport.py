"""The client's IO on trio-websocket: opening a WebSocket (and turning every way that can
fail into a CloseInfo), one open connection with its pending commands, reading its frames,
and noticing when it stops answering."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_websocket
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from roomcast.client.backoff import DEAD_LINK
from roomcast.client.errors import ConnectionLost, RoomcastError
from roomcast.client.events import CloseInfo
from roomcast.codes import CloseCode

__all__ = ["Call", "Link", "closed", "open_websocket", "read_frames", "watch_pings"]

logger = logging.getLogger("roomcast.client")

#: HTTP statuses of a refused handshake that will not fix themselves: do not hammer.
_REFUSED = {401: CloseCode.UNAUTHORIZED, 403: CloseCode.FORBIDDEN, 404: CloseCode.FORBIDDEN}


@dataclass(eq=False)
class Call:
    """A command waiting for its reply."""

    done: trio.Event = field(default_factory=trio.Event)
    reply: dict[str, Any] | None = None
    lost: bool = False  # its connection closed first
    error: RoomcastError | None = None  # the client stopped first


class Link:
    """One WebSocket connection of the client's life."""

    def __init__(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        self.ws = ws
        self.scope = scope
        self.seen = trio.Event()  # set by every frame: the link is alive
        self.handing_off = False  # waiting on the app, not on the server
        self.close: CloseInfo | None = None

    def end(self, close: CloseInfo) -> None:
        """End this connection (its tasks are cancelled) and remember why."""
        if self.close is None:
            self.close = close
        self.scope.cancel()

    async def send(self, frame: dict[str, Any]) -> None:
        """Send a frame; ConnectionLost when this connection is gone."""
        try:
            await self.ws.send_message(json.dumps(frame, separators=(",", ":")))
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionLost("the connection closed before the command was sent") from None


def closed(exc: ConnectionClosed) -> CloseInfo:
    """Why trio-websocket says the connection closed (1006 without a close frame)."""
    reason = exc.reason
    if reason is None:
        return CloseInfo(CloseCode.ABNORMAL, "")
    return CloseInfo(reason.code or CloseCode.ABNORMAL, reason.reason or "")


async def open_websocket(
    nursery: trio.Nursery, url: str, token: str, timeout: float, max_message_size: int
) -> tuple[WebSocketConnection, str | bytes] | CloseInfo:
    """Open a WebSocket to `url` with the token as a Bearer header and read its first
    frame within `timeout` seconds; or why that failed, as the close code to act on."""
    headers = [(b"Authorization", f"Bearer {token}".encode())]
    try:
        with trio.fail_after(timeout):
            ws = await trio_websocket.connect_websocket_url(
                nursery, url, extra_headers=headers, max_message_size=max_message_size)
            return ws, await ws.get_message()
    except trio.TooSlowError:
        return CloseInfo(DEAD_LINK, f"no `connected` frame within {timeout} s")
    except ConnectionClosed as exc:
        return closed(exc)
    except trio_websocket.ConnectionRejected as exc:
        body = (exc.body or b"").decode(errors="replace")[:200]
        status = exc.status_code
        # A wrong path, origin or key is not a passing problem: stop rather than retry.
        code = _REFUSED.get(status or 0, CloseCode.ABNORMAL)
        return CloseInfo(code, f"HTTP {status} {body}".strip())
    except (OSError, HandshakeError, trio.BrokenResourceError) as exc:
        return CloseInfo(CloseCode.ABNORMAL, f"cannot connect to {url}: {exc}")


async def read_frames(link: Link,
                      handle: Callable[[Link, dict[str, Any]], Awaitable[None]]) -> None:
    """Read the link's frames and give each JSON object to `handle`, until it closes."""
    while True:
        try:
            text = await link.ws.get_message()
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


async def watch_pings(link: Link, interval: float | None, timeout: float,
                      next_id: Callable[[], int]) -> None:
    """Ping every `interval` seconds; end the link as dead when no frame at all arrives
    within `timeout` after a ping (unless the client is waiting on the app)."""
    if not interval:
        return
    while True:
        await trio.sleep(interval)
        link.seen = trio.Event()
        try:
            await link.send({"type": "ping", "id": f"ping-{next_id()}"})
        except ConnectionLost:
            return
        with trio.move_on_after(timeout):
            await link.seen.wait()
        if not link.seen.is_set() and not link.handing_off:
            link.end(CloseInfo(DEAD_LINK, f"no answer to a ping within {timeout} s"))
            return
