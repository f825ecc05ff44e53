"""What the server API answers, as small frozen dataclasses (read defensively from JSON,
so a newer server's extra fields do no harm). Pure: no IO."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BroadcastResult",
    "HistoryMessage",
    "HistoryResult",
    "PresenceResult",
    "PresenceUser",
    "PublishResult",
    "Stats",
]


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Where a published message went: its `offset` in stream `epoch` of `room`;
    `duplicate` when the server had this idempotency key already (from an earlier try of
    the same call, or the app's own retry) and delivered nothing new."""

    room: str
    offset: int
    epoch: str | None
    duplicate: bool
    idempotency_key: str

    @classmethod
    def parse(cls, room: str, key: str, body: Mapping[str, Any]) -> PublishResult:
        """From `{"offset", "epoch", "duplicate"}`."""
        epoch = body.get("epoch")
        return cls(room, int(body["offset"]), None if epoch is None else str(epoch),
                   bool(body.get("duplicate", False)), key)


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    """Each room's new offset (and the stream it went into, when the server names it)."""

    offsets: dict[str, int]
    epochs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> BroadcastResult:
        """From `{"offsets": {room: n}, "epochs": {room: e}}`."""
        return cls({str(k): int(v) for k, v in dict(body.get("offsets") or {}).items()},
                   {str(k): str(v) for k, v in dict(body.get("epochs") or {}).items()})


@dataclass(frozen=True, slots=True)
class PresenceUser:
    """One user in a room: how many connections, and the info from their token."""

    user_id: str
    connections: int
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PresenceResult:
    """Who is in a room now."""

    room: str
    users: list[PresenceUser]

    @classmethod
    def parse(cls, room: str, body: Mapping[str, Any]) -> PresenceResult:
        """From `{"room", "users": [{"user_id", "connections", "info"}]}`."""
        return cls(str(body.get("room", room)), [
            PresenceUser(str(u["user_id"]), int(u.get("connections", 1)),
                         dict(u.get("info") or {}))
            for u in body.get("users") or []])


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    """A message the server keeps in a room's history."""

    offset: int
    event: str | None
    data: Any
    sender: str | None
    ts: str


@dataclass(frozen=True, slots=True)
class HistoryResult:
    """A room's stream (`epoch`, last `offset`) and the kept messages asked for, oldest
    first."""

    room: str
    epoch: str
    offset: int
    messages: list[HistoryMessage]

    @classmethod
    def parse(cls, room: str, body: Mapping[str, Any]) -> HistoryResult:
        """From the `history` reply's shape."""
        return cls(str(body.get("room", room)), str(body.get("epoch", "")),
                   int(body.get("offset", 0)), [
                       HistoryMessage(int(m["offset"]), m.get("event"), m.get("data"),
                                      m.get("sender"), str(m.get("ts", "")))
                       for m in body.get("messages") or []])


@dataclass(frozen=True, slots=True)
class Stats:
    """The node's counts; `raw` keeps every field the server sent."""

    connections: int
    users: int
    rooms: int
    node: str
    raw: dict[str, Any]

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Stats:
        """From `{"connections", "users", "rooms", "node", ...}`."""
        return cls(int(body.get("connections", 0)), int(body.get("users", 0)),
                   int(body.get("rooms", 0)), str(body.get("node", "")), dict(body))
