"""The client's exceptions: each derives from `roomcast.errors.RoomcastError` and says what
happened to a command or to the connection, so the app knows whether to retry."""

from __future__ import annotations

from roomcast.errors import RoomcastError

__all__ = [
    "CommandError",
    "ConnectError",
    "ConnectionLost",
    "Disconnected",
    "RequestTimeout",
    "RoomcastError",
]


class CommandError(RoomcastError):
    """The server answered a command with an `error` frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(RoomcastError):
    """The connection closed before the reply came; the command may be sent again."""


class RequestTimeout(RoomcastError, TimeoutError):
    """No reply within the time-out."""


class Disconnected(RoomcastError):
    """The client stopped for good: the server closed with a code that says "do not come
    back" (or the app closed the client). `code` and `reason` are the server's."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"disconnected ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class ConnectError(RoomcastError, TimeoutError):
    """The first connection did not come about within `wait` seconds."""
