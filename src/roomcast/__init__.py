"""roomcast: a real-time WebSocket message router for Python, built on Trio."""

from roomcast.auth import AuthError, Principal
from roomcast.errors import RoomcastError
from roomcast.router import Router
from roomcast.server import open_router
from roomcast.settings import Settings, SettingsError, load_settings

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
