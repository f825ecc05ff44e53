"""The Python client for roomcast, on Trio: one logical connection that survives reconnects.

    async with roomcast.client.connect("ws://127.0.0.1:8000/ws", token=get_token) as client:
        await client.subscribe("project:12")
        await client.publish("project:12", {"task_id": 7}, event="task.created")
        async for event in client.messages():
            print(event)

It follows the server's close codes (some mean "never come back"), reconnects with
exponential backoff and full jitter, resubscribes with `since` so nothing still in history
is lost, resends unanswered publishes with their idempotency key, refreshes the token
before it expires and pings to notice a dead link. See docs/clients.md.
"""

from __future__ import annotations

import base64
import enum
import inspect
import itertools
import json
import logging
import math
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import trio
import trio_websocket
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

__all__ = [
    "DEAD_LINK",
    "STOP_CODES",
    "Backoff",
    "Client",
    "CloseInfo",
    "CommandError",
    "ConnectError",
    "ConnectionLost",
    "Direct",
    "Disconnected",
    "Event",
    "HistoryPage",
    "Joined",
    "Left",
    "Message",
    "Position",
    "PresenceUser",
    "PublishResult",
    "Recovery",
    "RequestTimeout",
    "RoomcastError",
    "State",
    "SubscribeResult",
    "TokenSource",
    "connect",
    "token_expiry",
]

logger = logging.getLogger("roomcast.client")

#: Close codes after which the client does not reconnect (4401 only without a new token).
STOP_CODES = frozenset({1000, 1009, 4400, 4401, 4403})
#: The client's own code for a link that stopped answering pings (never sent by a server).
DEAD_LINK = 4008
_ABNORMAL = 1006

TokenSource = str | Callable[[], str | Awaitable[str]]


class State(enum.StrEnum):
    """Where the client is: it starts connecting, and only close() or a stop code make it
    disconnected for good."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    DISCONNECTED = "disconnected"


# ---------------------------------------------------------------- errors
class RoomcastError(Exception):
    """Base of the client's errors."""


class CommandError(RoomcastError):
    """The server answered a command with an `error` frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(RoomcastError):
    """The connection closed before the reply came; the command may be sent again."""


class RequestTimeout(RoomcastError, TimeoutError):
    """No reply within the time-out."""


class Disconnected(RoomcastError):
    """The client stopped for good: the server closed with a code that says "do not come
    back" (or the app closed the client). `code` and `reason` are the server's."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"disconnected ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class ConnectError(RoomcastError, TimeoutError):
    """The first connection did not come about within `wait` seconds."""


# ---------------------------------------------------------------- what comes in
class Position(NamedTuple):
    """Where a client is in a room's stream: the last offset seen, in which epoch."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Message:
    """A room message (live, replayed after a resume, or from history)."""

    room: str
    offset: int
    event: str | None
    data: Any
    sender: str | None
    ts: str
    replayed: bool = False  # sent by the server's recovery after a resubscribe with since

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any], replayed: bool = False) -> Message:
        return cls(str(frame["room"]), int(frame["offset"]), frame.get("event"),
                   frame.get("data"), frame.get("sender"), str(frame.get("ts", "")), replayed)

    def frame(self) -> dict[str, Any]:
        """The message as the wire shows it."""
        return {"type": "message", "room": self.room, "offset": self.offset,
                "event": self.event, "data": self.data, "sender": self.sender, "ts": self.ts}


@dataclass(frozen=True, slots=True)
class Joined:
    """A user's first connection entered a room (subscriptions made with presence=True)."""

    room: str
    user_id: str
    info: dict[str, Any]

    def frame(self) -> dict[str, Any]:
        return {"type": "joined", "room": self.room, "user_id": self.user_id, "info": self.info}


@dataclass(frozen=True, slots=True)
class Left:
    """A user's last connection left a room."""

    room: str
    user_id: str

    def frame(self) -> dict[str, Any]:
        return {"type": "left", "room": self.room, "user_id": self.user_id}


@dataclass(frozen=True, slots=True)
class Direct:
    """A frame the server sent to this one connection."""

    event: str | None
    data: Any
    ts: str

    def frame(self) -> dict[str, Any]:
        return {"type": "direct", "event": self.event, "data": self.data, "ts": self.ts}


@dataclass(frozen=True, slots=True)
class Recovery:
    """The outcome of resubscribing a room with `since` (after a reconnect, or when asked).

    recovered: every message after `since` follows (as replayed Messages). Otherwise the app
    must reload its state: `missed` names the lost offsets when the stream is the same
    (the messages after it follow), or the epoch changed and the old stream is gone.
    """

    room: str
    recovered: bool
    epoch: str
    offset: int  # the room's last offset when the server answered
    since: Position
    missed: tuple[int, int] | None = None

    @property
    def epoch_changed(self) -> bool:
        return self.epoch != self.since.epoch

    def frame(self) -> dict[str, Any]:
        return {"type": "recovery", "room": self.room, "recovered": self.recovered,
                "epoch": self.epoch, "offset": self.offset,
                "since": {"offset": self.since.offset, "epoch": self.since.epoch},
                "missed": None if self.missed is None else
                {"from": self.missed[0], "to": self.missed[1]}}


Event = Message | Joined | Left | Direct | Recovery


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    """One room's entry of a `subscribed` reply."""

    room: str
    ok: bool
    offset: int | None = None
    epoch: str | None = None
    recovered: bool | None = None
    missed: tuple[int, int] | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PublishResult:
    room: str
    offset: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class HistoryPage:
    room: str
    epoch: str
    offset: int
    messages: list[Message]


@dataclass(frozen=True, slots=True)
class PresenceUser:
    user_id: str
    connections: int
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CloseInfo:
    """Why a connection ended: the close code (1006 when the TCP connection just ended,
    DEAD_LINK when pings went unanswered) and the reason."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: attempt n waits up to min(maximum, initial × factor**n) seconds,
    less a random share of it (jitter 1 = full jitter, 0 = none). After 4429 the
    series starts at `long_initial` instead."""

    initial: float = 0.5
    factor: float = 1.5
    maximum: float = 30.0
    jitter: float = 1.0
    long_initial: float = 5.0

    def delay(self, attempt: int, code: int | None = None,
              rand: Callable[[], float] = random.random) -> float:
        if code == 1001:  # draining: come back at once, spread out
            return self.initial * (1 - rand())
        start = max(self.long_initial, self.initial) if code == 4429 else self.initial
        ceiling = min(self.maximum, start * self.factor ** min(attempt, 1000))
        return ceiling * (1 - self.jitter * rand())


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (unix seconds), or None; the signature is not checked."""
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
    except (IndexError, ValueError):
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


# ---------------------------------------------------------------- internals
@dataclass(eq=False)
class _Call:
    done: trio.Event = field(default_factory=trio.Event)
    reply: dict[str, Any] | None = None
    lost: bool = False


@dataclass(eq=False)
class _Waiter:
    """Waits for a room's entry in some `subscribed` reply."""

    done: trio.Event = field(default_factory=trio.Event)
    result: SubscribeResult | None = None
    error: RoomcastError | None = None


@dataclass(frozen=True)
class _Filters:
    events: tuple[str, ...] | None
    where: tuple[tuple[str, str], ...] | None  # (key, JSON value) pairs: hashable
    presence: bool

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.events is not None:
            out["events"] = list(self.events)
        if self.where is not None:
            out["where"] = {k: json.loads(v) for k, v in self.where}
        if self.presence:
            out["presence"] = True
        return out


class _Session:
    """One WebSocket connection of the client's life."""

    def __init__(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        self.ws = ws
        self.scope = scope
        self.calls: dict[int | str, _Call] = {}
        self.subscribes: dict[int, tuple[list[str], dict[str, Position]]] = {}
        self.replay_until: dict[str, int] = {}
        self.seen = trio.Event()
        self.handing_off = False
        self.close: CloseInfo | None = None

    def end(self, close: CloseInfo) -> None:
        if self.close is None:
            self.close = close
        self.scope.cancel()

    async def send(self, frame: dict[str, Any]) -> None:
        """Send a frame; ConnectionLost when this connection is gone."""
        try:
            await self.ws.send_message(json.dumps(frame, separators=(",", ":")))
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionLost("the connection closed before the command was sent") from None


def _closed(exc: ConnectionClosed) -> CloseInfo:
    reason = exc.reason
    if reason is None:
        return CloseInfo(_ABNORMAL, "")
    return CloseInfo(reason.code or _ABNORMAL, reason.reason or "")


def _position(value: Any) -> Position:
    if isinstance(value, Mapping):
        return Position(int(value["offset"]), str(value["epoch"]))
    offset, epoch = value
    return Position(int(offset), str(epoch))


def _parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


class Client:
    """A roomcast connection that reconnects by itself. Made by `connect()`."""

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        backoff: Backoff = Backoff(),
        connect_timeout: float = 10.0,
        request_timeout: float = 10.0,
        publish_timeout: float = 60.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 10.0,
        refresh_before: float = 30.0,
        max_buffer: int = 1000,
        max_message_size: int = 16 * 1024 * 1024,
        on_state: Callable[[State, CloseInfo | None], None] | None = None,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"the URL must start with ws:// or wss://, got {url!r}")
        if not token:
            raise ValueError("a token is required: a JWT string, or a function returning one")
        self.url = url
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.publish_timeout = publish_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.refresh_before = refresh_before
        self.max_message_size = max_message_size
        self.on_state = on_state
        self.state = State.CONNECTING
        self.token: str | None = None  # the token of the live (or last) connection
        self.connection: dict[str, Any] | None = None  # the server's `connected` frame
        self.last_close: CloseInfo | None = None
        self.stopped: Disconnected | None = None  # why the client stopped for good
        self._token_source = token
        self._next_token: str | None = None
        self._subs: dict[str, _Filters] = {}
        self._positions: dict[str, Position] = {}
        self._waiters: dict[str, list[_Waiter]] = {}
        self._session: _Session | None = None
        self._state_changed = trio.Event()
        self._ids = itertools.count(1)
        self._attempt = 0
        self._skew = 0.0  # server clock minus ours, seconds
        self._closing = False
        self._run_scope = trio.CancelScope()
        self._finished = trio.Event()
        self._events_send, self._events_receive = trio.open_memory_channel[Event](max_buffer)

    # ------------------------------------------------------------ state
    @property
    def subscriptions(self) -> list[str]:
        """The rooms this client keeps subscribed (across reconnects)."""
        return list(self._subs)

    def position(self, room: str) -> Position | None:
        """The last offset seen in a room and its epoch (what a resume sends as `since`)."""
        return self._positions.get(room)

    def _set_state(self, state: State, close: CloseInfo | None = None) -> None:
        if state == self.state:
            return
        self.state = state
        self._state_changed.set()
        self._state_changed = trio.Event()
        if self.on_state is not None:
            self.on_state(state, close)

    async def wait_state(self, *states: State) -> State:
        """Return once the client is in one of `states` (now or later)."""
        while self.state not in states:
            await self._state_changed.wait()
        return self.state

    async def _wait_session(self) -> _Session:
        while True:
            if self.stopped is not None:
                raise Disconnected(self.stopped.code, self.stopped.reason)
            if self.state == State.CONNECTED and self._session is not None:
                return self._session
            await self._state_changed.wait()

    # ------------------------------------------------------------ the connection loop
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

    async def run(self) -> None:
        """Connect, and reconnect after every loss, until close() or a stop code."""
        try:
            with self._run_scope:
                await self._run()
        finally:
            if self.stopped is None:
                self._stop(CloseInfo(1000, "closed by the client"))
            self._finished.set()

    async def _run(self) -> None:
        while not self._closing:
            try:
                token = await self._token()
            except Exception as exc:
                logger.warning("could not get a token: %s", exc)
                close = CloseInfo(_ABNORMAL, f"no token: {exc}")
            else:
                self.token = token
                close = await self._connect_once(token)
            self.last_close = close
            if self._closing:
                break
            if close.code == 4401 and await self._new_token_after_4401():
                pass
            elif close.code in STOP_CODES:
                self._stop(close)
                return
            delay = self.backoff.delay(self._attempt, close.code)
            self._attempt += 1
            logger.info("connection closed (%s %s); reconnecting in %.2f s",
                        close.code, close.reason, delay)
            self._set_state(State.RECONNECTING, close)
            await trio.sleep(delay)

    async def _new_token_after_4401(self) -> bool:
        """After 4401: True (and keep it) when the token function has a different token."""
        if not callable(self._token_source):
            return False
        try:
            fresh = await self._token()
        except Exception as exc:
            logger.warning("could not get a new token after 4401: %s", exc)
            return False
        if fresh == self.token:
            return False
        self._next_token = fresh
        return True

    def _stop(self, close: CloseInfo) -> None:
        self.stopped = Disconnected(close.code, close.reason)
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.error = self.stopped
                waiter.done.set()
        self._waiters.clear()
        self._events_send.close()
        self._set_state(State.DISCONNECTED, close)

    async def _connect_once(self, token: str) -> CloseInfo:
        """One connection from handshake to close; returns why it ended."""
        headers = [(b"Authorization", f"Bearer {token}".encode())]
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(self.connect_timeout):
                    ws = await trio_websocket.connect_websocket_url(
                        nursery, self.url, extra_headers=headers,
                        max_message_size=self.max_message_size,
                    )
                    first = await ws.get_message()
            except trio.TooSlowError:
                nursery.cancel_scope.cancel()
                return CloseInfo(DEAD_LINK, f"no `connected` frame within {self.connect_timeout} s")
            except ConnectionClosed as exc:
                nursery.cancel_scope.cancel()
                return _closed(exc)
            except trio_websocket.ConnectionRejected as exc:
                nursery.cancel_scope.cancel()
                body = (exc.body or b"").decode(errors="replace")[:200]
                if exc.status_code in (401, 403, 404):
                    # Not a passing problem: wrong path, origin or key. Do not hammer.
                    return CloseInfo(4403 if exc.status_code != 401 else 4401,
                                     f"HTTP {exc.status_code} {body}".strip())
                return CloseInfo(_ABNORMAL, f"HTTP {exc.status_code} {body}".strip())
            except (OSError, HandshakeError, trio.BrokenResourceError) as exc:
                nursery.cancel_scope.cancel()
                return CloseInfo(_ABNORMAL, f"cannot connect to {self.url}: {exc}")
            close = CloseInfo(_ABNORMAL, "the connection failed")
            try:
                close = await self._serve(ws, first)
                return close
            finally:
                self._session = None
                # A dead link never finishes a closing handshake: do not wait for one.
                with trio.move_on_after(0.1 if close.code == DEAD_LINK else 1.0) as scope:
                    scope.shield = True
                    if self._closing:
                        await ws.aclose(1000, "closed by the client")
                    else:
                        await ws.aclose()
                nursery.cancel_scope.cancel()

    async def _serve(self, ws: WebSocketConnection, first: str | bytes) -> CloseInfo:
        try:
            hello = json.loads(first)
        except ValueError:
            hello = None
        if not isinstance(hello, dict) or hello.get("type") != "connected":
            return CloseInfo(4400, "the server's first frame was not `connected`")
        self.connection = hello
        server_time = _parse_time(str(hello.get("server_time", "")))
        self._skew = server_time - time.time() if server_time is not None else 0.0
        self._attempt = 0
        with trio.CancelScope() as scope:
            session = _Session(ws, scope)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader, session)
                    try:
                        await self._resubscribe(session)
                    except ConnectionLost:
                        pass  # the reader sees the close and ends the session
                    else:
                        self._session = session
                        self._set_state(State.CONNECTED)
                        nursery.start_soon(self._pinger, session)
                        nursery.start_soon(self._refresher, session)
            finally:
                self._session = None
                for call in session.calls.values():
                    call.lost = True
                    call.done.set()
        if session.close is None:
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                return _closed(exc)
            return CloseInfo(_ABNORMAL, "the connection ended")
        return session.close

    # ------------------------------------------------------------ frames in
    async def _reader(self, session: _Session) -> None:
        while True:
            try:
                text = await session.ws.get_message()
            except ConnectionClosed as exc:
                session.end(_closed(exc))
                return
            session.seen.set()
            try:
                frame = json.loads(text)
            except ValueError:
                logger.warning("the server sent a frame that is not JSON: %.100r", text)
                continue
            if isinstance(frame, dict):
                await self._dispatch(session, frame)

    async def _hand_off(self, session: _Session, event: Event) -> None:
        """Give an event to messages(); waits while the app is behind (backpressure)."""
        session.handing_off = True
        try:
            await self._events_send.send(event)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            session.handing_off = False

    async def _dispatch(self, session: _Session, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message":
            await self._on_message(session, frame)
        elif kind == "joined":
            await self._hand_off(session, Joined(str(frame.get("room")),
                                                 str(frame.get("user_id")),
                                                 dict(frame.get("info") or {})))
        elif kind == "left":
            await self._hand_off(session, Left(str(frame.get("room")),
                                               str(frame.get("user_id"))))
        elif kind == "direct":
            await self._hand_off(session, Direct(frame.get("event"), frame.get("data"),
                                                 str(frame.get("ts", ""))))
        elif kind == "subscribed":
            await self._on_subscribed(session, frame)
        else:
            command_id = frame.get("id")
            if kind == "error" and isinstance(command_id, int) and command_id in session.subscribes:
                self._on_subscribe_error(session, frame)
                return
            call = session.calls.pop(command_id, None) if command_id is not None else None
            if call is not None:
                call.reply = frame
                call.done.set()
            elif kind == "error":
                logger.warning("server error: %s %s", frame.get("code"), frame.get("message"))

    async def _on_message(self, session: _Session, frame: dict[str, Any]) -> None:
        try:
            room, offset = str(frame["room"]), int(frame["offset"])
        except (KeyError, TypeError, ValueError):
            return
        at = self._positions.get(room)
        if at is not None:
            if offset <= at.offset:
                return  # already seen: a replay overlapping what came live
            self._positions[room] = Position(offset, at.epoch)
        replayed = False
        until = session.replay_until.get(room)
        if until is not None:
            replayed = offset <= until
            if offset >= until:
                del session.replay_until[room]
        await self._hand_off(session, Message.from_frame(frame, replayed))

    async def _on_subscribed(self, session: _Session, frame: dict[str, Any]) -> None:
        command_id = frame.get("id")
        sent = session.subscribes.pop(command_id, None) if isinstance(command_id, int) else None
        since = sent[1] if sent else {}
        rooms = frame.get("rooms")
        if not isinstance(rooms, dict):
            return
        recoveries: list[Recovery] = []
        for room, entry in rooms.items():
            result = self._entry(room, entry)
            if not result.ok:
                if result.error != "unavailable":
                    self._subs.pop(room, None)
                    self._positions.pop(room, None)
            elif room in self._subs and result.offset is not None and result.epoch is not None:
                start = since.get(room)
                if start is not None:
                    offset = result.offset  # another stream: start at its top
                    if result.recovered:
                        offset = start.offset
                    elif result.missed is not None:
                        offset = result.missed[1]
                    at = self._positions.get(room)
                    if at is not None and at.epoch == result.epoch and at.offset > offset:
                        offset = at.offset
                    self._positions[room] = Position(offset, result.epoch)
                    if result.offset > offset:
                        session.replay_until[room] = result.offset
                    recoveries.append(Recovery(room, bool(result.recovered), result.epoch,
                                               result.offset, start, result.missed))
                else:
                    self._positions[room] = Position(result.offset, result.epoch)
            for waiter in self._waiters.pop(room, []):
                waiter.result = result
                waiter.done.set()
        for recovery in recoveries:
            await self._hand_off(session, recovery)

    @staticmethod
    def _entry(room: str, entry: Any) -> SubscribeResult:
        if not isinstance(entry, dict) or not entry.get("ok"):
            error = entry.get("error") if isinstance(entry, dict) else None
            return SubscribeResult(room, False, error=str(error or "unknown"))
        missed = entry.get("missed")
        return SubscribeResult(
            room, True, int(entry["offset"]), str(entry["epoch"]), entry.get("recovered"),
            (int(missed["from"]), int(missed["to"])) if isinstance(missed, dict) else None,
        )

    def _on_subscribe_error(self, session: _Session, frame: dict[str, Any]) -> None:
        rooms, _since = session.subscribes.pop(int(frame["id"]))
        error = CommandError(str(frame.get("code")), str(frame.get("message")))
        for room in rooms:
            waiters = self._waiters.pop(room, [])
            if waiters:
                self._subs.pop(room, None)  # a fresh subscribe the server refused outright
            for waiter in waiters:
                waiter.error = error
                waiter.done.set()
        logger.warning("subscribe of %s refused: %s", ", ".join(rooms), error)

    # ------------------------------------------------------------ frames out
    async def _send_subscribe(self, session: _Session, rooms: list[str], filters: _Filters,
                              since: dict[str, Position]) -> None:
        command_id = next(self._ids)
        frame: dict[str, Any] = {"type": "subscribe", "id": command_id, "rooms": rooms,
                                 **filters.fields()}
        if since:
            frame["since"] = {room: {"offset": p.offset, "epoch": p.epoch}
                              for room, p in since.items()}
        session.subscribes[command_id] = (rooms, since)
        await session.send(frame)

    async def _resubscribe(self, session: _Session) -> None:
        """Every kept room, with `since` where a position is known; one command per set of
        filters, at most 100 rooms each. Rooms added meanwhile are sent too."""
        sent: set[str] = set()
        while True:
            groups: dict[_Filters, list[str]] = {}
            for room, filters in self._subs.items():
                if room not in sent:
                    groups.setdefault(filters, []).append(room)
            if not groups:
                return
            for filters, rooms in groups.items():
                for i in range(0, len(rooms), 100):
                    chunk = rooms[i:i + 100]
                    since = {r: self._positions[r] for r in chunk if r in self._positions}
                    sent.update(chunk)
                    await self._send_subscribe(session, chunk, filters, since)

    async def _request(self, frame: dict[str, Any], timeout: float | None = None,
                       session: _Session | None = None) -> dict[str, Any]:
        """Send a command and return its reply (raise CommandError for an `error`)."""
        timeout = self.request_timeout if timeout is None else timeout
        with trio.move_on_after(timeout) as scope:
            if session is None:
                session = await self._wait_session()
            command_id = next(self._ids)
            call = _Call()
            session.calls[command_id] = call
            await session.send({**frame, "id": command_id})
            await call.done.wait()
        if scope.cancelled_caught:
            if session is not None:
                session.calls.pop(command_id, None)
            raise RequestTimeout(f"no reply to {frame['type']} within {timeout} s")
        if call.lost:
            raise ConnectionLost(f"the connection closed before the reply to {frame['type']}")
        reply = call.reply or {}
        if reply.get("type") == "error":
            raise CommandError(str(reply.get("code")), str(reply.get("message")))
        return reply

    # ------------------------------------------------------------ liveness
    async def _pinger(self, session: _Session) -> None:
        if not self.ping_interval:
            return
        while True:
            await trio.sleep(self.ping_interval)
            session.seen = trio.Event()
            try:
                await session.send({"type": "ping", "id": f"ping-{next(self._ids)}"})
            except ConnectionLost:
                return
            with trio.move_on_after(self.ping_timeout):
                await session.seen.wait()
            if not session.seen.is_set() and not session.handing_off:
                session.end(CloseInfo(DEAD_LINK, f"no answer to a ping within "
                                                 f"{self.ping_timeout} s"))
                return

    def _server_now(self) -> float:
        return time.time() + self._skew

    async def _refresher(self, session: _Session) -> None:
        if not callable(self._token_source):
            return
        while True:
            exp = token_expiry(self.token or "")
            if exp is None:
                return
            remaining = exp - self._server_now()
            lead = min(self.refresh_before, max(remaining, 0.0) / 4)
            await trio.sleep(max(0.0, remaining - lead))
            while True:
                try:
                    fresh = await self._token()
                except Exception as exc:
                    logger.warning("could not refresh the token: %s", exc)
                    return
                if fresh != self.token:
                    break
                left = exp - self._server_now()
                if left <= 2:
                    return  # nothing newer: the server will close with 4401
                await trio.sleep(left / 2)
            try:
                await self._refresh_on(session, fresh)
            except CommandError as exc:
                logger.warning("token refresh refused: %s", exc)
                return
            except (ConnectionLost, RequestTimeout):
                return

    async def _refresh_on(self, session: _Session | None, token: str) -> str:
        reply = await self._request({"type": "refresh", "token": token}, session=session)
        self.token = token
        return str(reply.get("expires_at", ""))

    # ------------------------------------------------------------ the public commands
    async def subscribe(
        self, rooms: str | Sequence[str], *, since: Mapping[str, Any] | None = None,
        events: Sequence[str] | None = None, where: Mapping[str, Any] | None = None,
        presence: bool = False, timeout: float | None = None,
    ) -> dict[str, SubscribeResult]:
        """Subscribe to rooms and return each room's result once the server answered.

        The subscription is kept: after a reconnect it is made again with `since`, so
        messages still in history are not lost. `since` ({room: Position or
        {"offset", "epoch"}}) resumes from a position the app saved itself.
        """
        names = [rooms] if isinstance(rooms, str) else list(rooms)
        if not 1 <= len(names) <= 100:
            raise ValueError("subscribe takes 1 to 100 rooms")
        if self.stopped is not None:
            raise Disconnected(self.stopped.code, self.stopped.reason)
        filters = _Filters(
            tuple(events) if events is not None else None,
            tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in where.items()))
            if where is not None else None,
            presence,
        )
        resume: dict[str, Position] = {}
        waiters: dict[str, _Waiter] = {}
        for room in names:
            self._subs[room] = filters
            if since is not None and room in since:
                resume[room] = self._positions[room] = _position(since[room])
            waiters[room] = waiter = _Waiter()
            self._waiters.setdefault(room, []).append(waiter)
        session = self._session
        if session is not None and self.state == State.CONNECTED:
            with suppress(ConnectionLost):  # else the resubscribe after the reconnect answers
                await self._send_subscribe(session, names, filters, resume)
        timeout = self.request_timeout if timeout is None else timeout
        with trio.move_on_after(timeout):
            for waiter in waiters.values():
                await waiter.done.wait()
        out: dict[str, SubscribeResult] = {}
        for room, waiter in waiters.items():
            if waiter.error is not None:
                raise waiter.error
            if waiter.result is None:
                raise RequestTimeout(f"no subscribed reply for {room} within {timeout} s "
                                     "(the subscription is kept and retried on reconnect)")
            out[room] = waiter.result
        return out

    async def unsubscribe(self, rooms: str | Sequence[str]) -> None:
        """Stop receiving rooms and forget their positions."""
        names = [rooms] if isinstance(rooms, str) else list(rooms)
        for room in names:
            self._subs.pop(room, None)
            self._positions.pop(room, None)
        if self.state == State.CONNECTED:
            await self._request({"type": "unsubscribe", "rooms": names})

    async def publish(self, room: str, data: Any, *, event: str | None = None,
                      idempotency_key: str | None = None,
                      timeout: float | None = None) -> PublishResult:
        """Publish into a room. It carries an idempotency key (made up unless given) and is
        sent again after every reconnect until the server answers, so it is delivered once
        (`duplicate` says the server had it already)."""
        key = idempotency_key or secrets.token_hex(16)
        frame: dict[str, Any] = {"type": "publish", "room": room, "data": data,
                                 "idempotency_key": key}
        if event is not None:
            frame["event"] = event
        timeout = self.publish_timeout if timeout is None else timeout
        reply: dict[str, Any] | None = None
        with trio.move_on_after(timeout):
            while reply is None:
                try:
                    reply = await self._request(frame, timeout=math.inf)
                except ConnectionLost:
                    await self._state_changed.wait()  # then send it again, same key
        if reply is None:
            raise RequestTimeout(f"no reply to publish within {timeout} s; it may or may not "
                                 f"have been delivered: retry with idempotency_key={key!r}")
        return PublishResult(str(reply.get("room", room)), int(reply["offset"]),
                             bool(reply.get("duplicate", False)))

    async def history(self, room: str, *, since: int | None = None,
                      limit: int | None = None) -> HistoryPage:
        """Messages the server keeps for a room (oldest first): after `since`, or the
        newest `limit` (default 100)."""
        frame: dict[str, Any] = {"type": "history", "room": room}
        if since is not None:
            frame["since"] = since
        if limit is not None:
            frame["limit"] = limit
        reply = await self._request(frame)
        return HistoryPage(room, str(reply["epoch"]), int(reply["offset"]),
                           [Message.from_frame(m) for m in reply.get("messages", [])])

    async def presence(self, room: str) -> list[PresenceUser]:
        """Who is in a room now."""
        reply = await self._request({"type": "presence", "room": room})
        return [PresenceUser(str(u["user_id"]), int(u.get("connections", 1)),
                             dict(u.get("info") or {})) for u in reply.get("users", [])]

    async def ping(self) -> float:
        """One round trip to the server, in seconds."""
        start = trio.current_time()
        await self._request({"type": "ping"}, timeout=self.ping_timeout)
        return trio.current_time() - start

    async def refresh(self, token: str | None = None) -> str:
        """Give the live connection a new token (from the token function unless given);
        returns the new expiry as the server wrote it."""
        return await self._refresh_on(None, token or await self._token())

    async def messages(self) -> AsyncIterator[Event]:
        """Messages, presence events, direct frames and resume outcomes, in order.

        Read them: when the app falls behind by `max_buffer` events the client stops
        reading the socket, and the server will close it as too slow (4409) and it
        resumes. Raises Disconnected when the client stopped for good on a server's word;
        ends when the app closed it."""
        while True:
            try:
                event = await self._events_receive.receive()
            except trio.EndOfChannel:
                if self.stopped is not None and not self._closing:
                    raise Disconnected(self.stopped.code, self.stopped.reason) from None
                return
            yield event

    async def aclose(self) -> None:
        """Close for good (code 1000); messages() ends, later commands raise Disconnected."""
        self._closing = True
        session = self._session
        if session is not None:
            session.end(CloseInfo(1000, "closed by the client"))  # it closes the socket
        else:
            self._run_scope.cancel()  # waiting or connecting: nothing to close politely
        with trio.move_on_after(2.0) as scope:
            scope.shield = True
            await self._finished.wait()


@asynccontextmanager
async def connect(
    url: str,
    token: TokenSource,
    *,
    wait: float | None = 30.0,
    backoff: Backoff = Backoff(),
    connect_timeout: float = 10.0,
    request_timeout: float = 10.0,
    publish_timeout: float = 60.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float = 10.0,
    refresh_before: float = 30.0,
    max_buffer: int = 1000,
    max_message_size: int = 16 * 1024 * 1024,
    on_state: Callable[[State, CloseInfo | None], None] | None = None,
) -> AsyncIterator[Client]:
    """A connected Client for the length of the block (closed at its end).

    `token` is a JWT, or a function (sync or async) returning one: it is asked on every
    connect and before the token expires, so it can hand out fresh ones. `wait` seconds
    for the first connection (ConnectError after; None waits forever, 0 not at all);
    a stop code on the first try raises Disconnected.
    """
    client = Client(url, token, backoff=backoff, connect_timeout=connect_timeout,
                    request_timeout=request_timeout, publish_timeout=publish_timeout,
                    ping_interval=ping_interval, ping_timeout=ping_timeout,
                    refresh_before=refresh_before, max_buffer=max_buffer,
                    max_message_size=max_message_size, on_state=on_state)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            try:
                if wait != 0:
                    with trio.move_on_after(math.inf if wait is None else wait):
                        await client.wait_state(State.CONNECTED, State.DISCONNECTED)
                    if client.stopped is not None:
                        raise Disconnected(client.stopped.code, client.stopped.reason)
                    if client.state != State.CONNECTED:
                        last = client.last_close
                        raise ConnectError(
                            f"could not connect to {url} within {wait} s"
                            + (f" (last: {last.code} {last.reason})" if last else "")
                        )
                yield client
            finally:
                await client.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery is ours, not the caller's: give back the one error as it was raised.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
