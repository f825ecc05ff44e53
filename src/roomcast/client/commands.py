"""What both clients (Trio and asyncio) share word for word: the commands, which only build
a frame, send it through the client's `_request` and read the reply, the subscriptions and
positions kept, and the token asked of the token source; none of it cares which event loop
runs it. Each client's lifecycle provides what is declared here."""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Sequence
from typing import Any

from roomcast.client.errors import RequestTimeout, RoomcastError
from roomcast.client.events import HistoryPage, Position, PresenceUser, PublishResult, State
from roomcast.client.rules import publish_frame, read_history, read_presence, read_published
from roomcast.client.session import Session
from roomcast.client.tokens import TokenSource


class Commands:
    """unsubscribe, publish, history, presence, ping and refresh, over `_request`."""

    state: State
    token: str | None
    publish_timeout: float
    ping_timeout: float
    _book: Session
    _token_source: TokenSource
    _next_token: str | None  # a token fetched ahead (refresh), used by the next connection

    async def _request(self, frame: dict[str, Any], timeout: float | None = None, *,
                       resend: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    def _clock(self) -> float:
        """The event loop's clock, in seconds."""
        raise NotImplementedError

    @property
    def subscriptions(self) -> list[str]:
        """The rooms this client keeps subscribed (across reconnects)."""
        return list(self._book.subs)

    def position(self, room: str) -> Position | None:
        """The last offset seen in a room and its epoch (what a resume sends as `since`)."""
        return self._book.positions.get(room)

    async def _token(self) -> str:
        if self._next_token is not None:
            token, self._next_token = self._next_token, None
            return token
        source = self._token_source
        value: Any = source() if callable(source) else source
        if inspect.isawaitable(value):
            value = await value
        if not isinstance(value, str) or not value:
            raise RoomcastError("the token function returned no token (it must return a "
                                "non-empty string)")
        return value

    async def unsubscribe(self, rooms: str | Sequence[str]) -> None:
        """Stop receiving rooms and forget their positions."""
        names = [rooms] if isinstance(rooms, str) else list(rooms)
        self._book.forget(names)
        if self.state == State.CONNECTED:
            await self._request({"type": "unsubscribe", "rooms": names})

    async def publish(self, room: str, data: Any, *, event: str | None = None,
                      idempotency_key: str | None = None,
                      timeout: float | None = None) -> PublishResult:
        """Publish into a room. It carries an idempotency key (made up unless given) and is
        sent again after every reconnect until the server answers, so it is delivered once
        (`duplicate` says the server had it already)."""
        key = idempotency_key or secrets.token_hex(16)
        frame = publish_frame(room, data, event, key)
        timeout = self.publish_timeout if timeout is None else timeout
        try:
            reply = await self._request(frame, timeout, resend=True)
        except RequestTimeout:
            raise RequestTimeout(f"no reply to publish within {timeout} s; it may or may not "
                                 f"have been delivered: retry with idempotency_key={key!r}"
                                 ) from None
        return read_published(room, reply)

    async def history(self, room: str, *, since: int | None = None,
                      limit: int | None = None) -> HistoryPage:
        """Messages the server keeps for a room (oldest first): after `since`, or the
        newest `limit` (default 100)."""
        frame: dict[str, Any] = {"type": "history", "room": room}
        if since is not None:
            frame["since"] = since
        if limit is not None:
            frame["limit"] = limit
        return read_history(room, await self._request(frame))

    async def presence(self, room: str) -> list[PresenceUser]:
        """Who is in a room now."""
        return read_presence(await self._request({"type": "presence", "room": room}))

    async def ping(self) -> float:
        """One round trip to the server, in seconds."""
        start = self._clock()
        await self._request({"type": "ping"}, timeout=self.ping_timeout)
        return self._clock() - start

    async def refresh(self, token: str | None = None) -> str:
        """Give the live connection a new token (from the token function unless given);
        returns the new expiry as the server wrote it."""
        return await self._refresh_on(token or await self._token())

    async def _refresh_on(self, token: str) -> str:
        reply = await self._request({"type": "refresh", "token": token})
        self.token = token
        return str(reply.get("expires_at", ""))
