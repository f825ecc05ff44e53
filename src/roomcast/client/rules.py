"""The client's decisions that do not depend on an IO library, shared by the Trio and the
asyncio shells: reading the `connected` frame, what to do after a close, when to refresh
the token, the command frames, and turning replies and frames into what the app sees.
Pure: no IO, no trio, no asyncio; every rule here is tested by calling it."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from roomcast.client.backoff import STOP_CODES
from roomcast.client.errors import CommandError
from roomcast.client.events import (
    Direct,
    Event,
    HistoryPage,
    Joined,
    Left,
    Message,
    Position,
    PresenceUser,
    PublishResult,
    SubscribeResult,
    missed_range,
)
from roomcast.client.session import Filters, Session
from roomcast.client.tokens import parse_time, token_expiry
from roomcast.codes import CloseCode

__all__ = [
    "Hello",
    "Inbound",
    "Next",
    "after_close",
    "inbound",
    "notice",
    "publish_frame",
    "read_hello",
    "read_history",
    "read_presence",
    "read_published",
    "refresh_wait",
    "subscribe_frame",
]


@dataclass(frozen=True, slots=True)
class Hello:
    """The server's `connected` frame and how far its clock is ahead of ours (seconds)."""

    connection: dict[str, Any]
    skew: float


def read_hello(first: str | bytes, now: float) -> Hello | None:
    """The first frame of a connection, read at unix time `now`; None when it is not
    `connected` (a protocol violation: the client stops)."""
    try:
        hello = json.loads(first)
    except ValueError:
        return None
    if not isinstance(hello, dict) or hello.get("type") != "connected":
        return None
    server_time = parse_time(str(hello.get("server_time", "")))
    return Hello(hello, server_time - now if server_time is not None else 0.0)


class Next(enum.Enum):
    """What the client does after a connection closed."""

    RETRY = "retry"  # wait the backoff delay, connect again
    STOP = "stop"  # for good: the server said not to come back
    ASK_TOKEN = "ask_token"  # 4401: come back only if the token function has a new token


def after_close(code: int, token_is_function: bool) -> Next:
    """What to do after a close with `code` (section 7's table, docs/clients.md)."""
    if code == CloseCode.UNAUTHORIZED and token_is_function:
        return Next.ASK_TOKEN
    return Next.STOP if code in STOP_CODES else Next.RETRY


def refresh_wait(token: str, server_now: float, refresh_before: float) -> float | None:
    """Seconds until the token should be refreshed: `refresh_before` ahead of its `exp`
    (at most a quarter of its remaining life), on the server's clock; None when it has
    no `exp`."""
    exp = token_expiry(token)
    if exp is None:
        return None
    remaining = exp - server_now
    lead = min(refresh_before, max(remaining, 0.0) / 4)
    return max(0.0, remaining - lead)


def subscribe_frame(command_id: int, rooms: list[str], filters: Filters,
                    since: Mapping[str, Position]) -> dict[str, Any]:
    """A `subscribe` command for `rooms`, with `since` where positions are given."""
    frame: dict[str, Any] = {"type": "subscribe", "id": command_id, "rooms": rooms,
                             **filters.fields()}
    if since:
        frame["since"] = {room: {"offset": p.offset, "epoch": p.epoch}
                          for room, p in since.items()}
    return frame


def publish_frame(room: str, data: Any, event: str | None, key: str) -> dict[str, Any]:
    """A `publish` command with its idempotency key (sent again, same key, until
    answered)."""
    frame: dict[str, Any] = {"type": "publish", "room": room, "data": data,
                             "idempotency_key": key}
    if event is not None:
        frame["event"] = event
    return frame


def read_published(room: str, reply: Mapping[str, Any]) -> PublishResult:
    """The `published` reply."""
    epoch = reply.get("epoch")
    return PublishResult(str(reply.get("room", room)), int(reply["offset"]),
                         bool(reply.get("duplicate", False)),
                         None if epoch is None else str(epoch))


def read_history(room: str, reply: Mapping[str, Any]) -> HistoryPage:
    """The `history` reply."""
    return HistoryPage(room, str(reply["epoch"]), int(reply["offset"]),
                       [Message.from_frame(m) for m in reply.get("messages", [])])


def read_presence(reply: Mapping[str, Any]) -> list[PresenceUser]:
    """The `presence` reply's users."""
    return [PresenceUser(str(u["user_id"]), int(u.get("connections", 1)),
                         dict(u.get("info") or {})) for u in reply.get("users", [])]


def notice(frame: Mapping[str, Any]) -> Event | None:
    """The event of a `joined`, `left` or `direct` frame; None for other frames."""
    kind = frame.get("type")
    if kind == "joined":
        return Joined(str(frame.get("room")), str(frame.get("user_id")),
                      dict(frame.get("info") or {}))
    if kind == "left":
        return Left(str(frame.get("room")), str(frame.get("user_id")))
    if kind == "direct":
        return Direct(frame.get("event"), frame.get("data"), str(frame.get("ts", "")))
    return None


@dataclass(slots=True)
class Inbound:
    """What a frame from the server means for the shell, in the order to do it: answer
    the subscribe callers waiting on `results`, fail those of `refused` rooms with
    `error`, hand `reply` to the command with its id, log `warning`, then give `events`
    to the app."""

    events: list[Event] = field(default_factory=list)
    results: list[SubscribeResult] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    error: CommandError | None = None
    reply: dict[str, Any] | None = None
    warning: str | None = None


def inbound(book: Session, frame: dict[str, Any]) -> Inbound:
    """Take in one frame from the server: the session's positions and rooms move as it
    says, and the Inbound tells the shell what else to do."""
    kind = frame.get("type")
    if kind == "message":
        try:
            room, offset = str(frame["room"]), int(frame["offset"])
        except (KeyError, TypeError, ValueError):
            return Inbound(warning=f"the server sent a malformed message frame: {frame!r:.200}")
        delivery = book.on_message(room, offset)
        return Inbound([Message.from_frame(frame, delivery.replayed)] if delivery.deliver
                       else [])
    if (event := notice(frame)) is not None:
        return Inbound([event])
    server = frame.get("server") is True
    rooms = frame.get("rooms")
    if kind == "unsubscribed" and server and isinstance(rooms, list):
        book.on_server_unsubscribed(rooms)
        return Inbound()
    if kind == "subscribed" and isinstance(rooms, dict):
        if server:
            book.on_server_subscribed(rooms)
            return Inbound()
        subscribed = book.on_subscribed(frame.get("id"), rooms)
        return Inbound(list(subscribed.recoveries), subscribed.results)
    if kind == "reset":
        return _reset(book, frame)
    if kind == "error":
        refused = book.on_subscribe_error(frame.get("id"))
        if refused is not None:
            return Inbound(refused=refused, error=CommandError(str(frame.get("code")),
                                                               str(frame.get("message"))))
    if frame.get("id") is not None:
        return Inbound(reply=frame)
    if kind == "error":
        return Inbound(warning=f"server error: {frame.get('code')} {frame.get('message')}")
    return Inbound()


def _reset(book: Session, frame: dict[str, Any]) -> Inbound:
    try:
        room, epoch, offset = str(frame["room"]), str(frame["epoch"]), int(frame["offset"])
        missed = missed_range(frame.get("missed"))
    except (KeyError, TypeError, ValueError):
        return Inbound(warning=f"the server sent a malformed reset frame: {frame!r:.200}")
    reset = book.on_reset(room, epoch, offset, missed)
    return Inbound([reset] if reset is not None else [])
