"""The client's decisions that do not depend on an IO library, shared by the Trio and the
asyncio shells: reading the `connected` frame, what to do after a close, when to refresh
the token, the command frames, and turning replies and frames into what the app sees.
Pure: no IO, no trio, no asyncio; every rule here is tested by calling it."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from roomcast.client.backoff import STOP_CODES
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
)
from roomcast.client.session import Filters
from roomcast.client.tokens import parse_time, token_expiry
from roomcast.codes import CloseCode

__all__ = [
    "Hello",
    "Next",
    "after_close",
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
