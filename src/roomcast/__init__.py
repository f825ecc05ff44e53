"""roomcast: a real-time WebSocket message router for Python, built on Trio."""

from roomcast.auth import AuthError, Principal
from roomcast.router import Router, open_router
from roomcast.settings import Settings, SettingsError, load_settings

__all__ = [
    "AuthError",
    "Principal",
    "Router",
    "Settings",
    "SettingsError",
    "load_settings",
    "open_router",
]
__version__ = "0.1.0"
