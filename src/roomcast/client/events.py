"""What the client hands the app: its state, the events `messages()` yields and the
results of commands, as frozen dataclasses that can show themselves in the wire's shape.
Pure: no IO."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "CloseInfo",
    "Direct",
    "Event",
    "HistoryPage",
    "Joined",
    "Left",
    "Message",
    "Position",
    "PresenceUser",
    "PublishResult",
    "Recovery",
    "Reset",
    "State",
    "SubscribeResult",
    "missed_range",
    "position",
    "subscribe_result",
]


class State(enum.StrEnum):
    """Where the client is: it starts connecting, and only close() or a stop code make it
    disconnected for good."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    DISCONNECTED = "disconnected"


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
        """The message of a `message` frame (or of a history page's entry)."""
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
        """The event as the wire shows it."""
        return {"type": "joined", "room": self.room, "user_id": self.user_id, "info": self.info}


@dataclass(frozen=True, slots=True)
class Left:
    """A user's last connection left a room."""

    room: str
    user_id: str

    def frame(self) -> dict[str, Any]:
        """The event as the wire shows it."""
        return {"type": "left", "room": self.room, "user_id": self.user_id}


@dataclass(frozen=True, slots=True)
class Direct:
    """A frame the server sent to this one connection."""

    event: str | None
    data: Any
    ts: str

    def frame(self) -> dict[str, Any]:
        """The event as the wire shows it."""
        return {"type": "direct", "event": self.event, "data": self.data, "ts": self.ts}


def _range(missed: tuple[int, int] | None) -> dict[str, int] | None:
    return None if missed is None else {"from": missed[0], "to": missed[1]}


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
        """Whether the room's stream was replaced since `since` (its old messages are gone)."""
        return self.epoch != self.since.epoch

    def frame(self) -> dict[str, Any]:
        """The outcome in the wire's style (the CLI prints it as a `recovery` line)."""
        return {"type": "recovery", "room": self.room, "recovered": self.recovered,
                "epoch": self.epoch, "offset": self.offset,
                "since": {"offset": self.since.offset, "epoch": self.since.epoch},
                "missed": _range(self.missed)}


@dataclass(frozen=True, slots=True)
class Reset:
    """The server's word that a room's stream changed under a live subscription (§17):
    its epoch changed (history lost: Redis restarted empty or failed over, in-memory
    history gone), or, in the same epoch, `missed` offsets that history could no longer
    fill. What the client had not yet received is gone: like `recovered: false`, the app
    reloads the room's state from its own source. The messages after `offset` of stream
    `epoch` follow, and none of them is taken for a duplicate of the old stream's."""

    room: str
    epoch: str  # the stream that delivery goes on in
    offset: int  # delivery goes on after this offset (normally 0 in a new stream)
    missed: tuple[int, int] | None = None  # offsets of `epoch` that will never come
    previous: Position | None = None  # where the client was in the room before

    @property
    def epoch_changed(self) -> bool:
        """Whether the stream was replaced (rather than a gap found in the same one)."""
        return self.previous is None or self.previous.epoch != self.epoch

    def frame(self) -> dict[str, Any]:
        """The reset as the wire shows it."""
        out: dict[str, Any] = {"type": "reset", "room": self.room, "epoch": self.epoch,
                               "offset": self.offset}
        if self.missed is not None:
            out["missed"] = _range(self.missed)
        return out


Event = Message | Joined | Left | Direct | Recovery | Reset


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
    """The `published` reply: the message's offset (in stream `epoch`, when the server
    names it); `duplicate` when the server had it already."""

    room: str
    offset: int
    duplicate: bool
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A `history` reply: the room's epoch and last offset, and the messages, oldest first."""

    room: str
    epoch: str
    offset: int
    messages: list[Message]


@dataclass(frozen=True, slots=True)
class PresenceUser:
    """One user in a `presence` reply."""

    user_id: str
    connections: int
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CloseInfo:
    """Why a connection ended: the close code (1006 when the TCP connection just ended,
    DEAD_LINK when pings went unanswered) and the reason."""

    code: int
    reason: str


def position(value: Any) -> Position:
    """A Position from what an app may pass as `since`: a Position, a pair, or a mapping
    with `offset` and `epoch`."""
    if isinstance(value, Mapping):
        return Position(int(value["offset"]), str(value["epoch"]))
    offset, epoch = value
    return Position(int(offset), str(epoch))


def missed_range(value: Any) -> tuple[int, int] | None:
    """A `missed` field ({"from": a, "to": b}) as a pair, or None."""
    if isinstance(value, Mapping):
        return int(value["from"]), int(value["to"])
    return None


def subscribe_result(room: str, entry: Any) -> SubscribeResult:
    """A room's entry of a `subscribed` reply, read defensively."""
    if not isinstance(entry, dict) or not entry.get("ok"):
        error = entry.get("error") if isinstance(entry, dict) else None
        return SubscribeResult(room, False, error=str(error or "unknown"))
    return SubscribeResult(room, True, int(entry["offset"]), str(entry["epoch"]),
                           entry.get("recovered"), missed_range(entry.get("missed")))
