"""What the backplane answers about a room's stream: a publish's offset, a room's position
and recovery, a page of history. Pure data, shared by the routing core and the backplanes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PublishResult:
    offset: int
    epoch: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class RoomPosition:
    """A room's last offset and epoch, and (when asked with `since`) what to resend."""

    offset: int
    epoch: str
    recovered: bool = False
    messages: list[tuple[int, bytes]] = field(default_factory=list)
    missed: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    offset: int
    epoch: str
    messages: list[bytes]
