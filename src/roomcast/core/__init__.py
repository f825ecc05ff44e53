"""The routing core (pure: no trio, no IO). See `roomcast.core.routing` for how it works."""

from roomcast.core.effects import (
    NOTHING,
    Ask,
    CallHook,
    CallHooks,
    Close,
    Effect,
    Effects,
    Fanout,
    RunCommand,
    Send,
)
from roomcast.core.peer import Peer
from roomcast.core.routing import Refused, RoutingCore

__all__ = [
    "NOTHING",
    "Ask",
    "CallHook",
    "CallHooks",
    "Close",
    "Effect",
    "Effects",
    "Fanout",
    "Peer",
    "Refused",
    "RoutingCore",
    "RunCommand",
    "Send",
]
