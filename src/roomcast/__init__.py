"""roomcast: a real-time WebSocket message router for Python, built on Trio.

The server's names load on first use, so that `import roomcast.api` (the server-API SDK)
or `roomcast.client` does not bring in the server (trio, the JWT stack, Prometheus).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from roomcast.errors import RoomcastError

if TYPE_CHECKING:
    from roomcast.auth import AuthError, Principal
    from roomcast.router import Router
    from roomcast.server import open_router
    from roomcast.settings import Settings, SettingsError, load_settings

_LAZY = {
    "AuthError": "roomcast.auth",
    "Principal": "roomcast.auth",
    "Router": "roomcast.router",
    "open_router": "roomcast.server",
    "Settings": "roomcast.settings",
    "SettingsError": "roomcast.settings",
    "load_settings": "roomcast.settings",
}

__all__ = [
    "AuthError",
    "Principal",
    "RoomcastError",
    "Router",
    "Settings",
    "SettingsError",
    "load_settings",
    "open_router",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'roomcast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, an ordinary attribute
    return value
