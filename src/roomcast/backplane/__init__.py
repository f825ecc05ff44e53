"""The seam between this node and the others: `memory` (one process) or `redis`."""

from __future__ import annotations

from roomcast.backplane.base import (
    Backplane,
    BackplaneUnavailable,
    HistoryPage,
    PublishResult,
    RoomPosition,
    Sink,
)
from roomcast.settings import Settings

__all__ = [
    "Backplane",
    "BackplaneUnavailable",
    "HistoryPage",
    "PublishResult",
    "RoomPosition",
    "Sink",
    "create_backplane",
]


def create_backplane(settings: Settings) -> Backplane:
    """The backplane the settings name."""
    if settings.backplane == "memory":
        from roomcast.backplane.memory import MemoryBackplane

        return MemoryBackplane(settings)
    from roomcast.backplane.redis import RedisBackplane

    backplane: Backplane = RedisBackplane(settings)
    return backplane
