"""The one root of every exception roomcast raises on purpose.

Catch `RoomcastError` to catch them all (settings, tokens, the backplane, the client, the
fuzzer); each subclass says in its message what to do next.
"""

from __future__ import annotations


class RoomcastError(Exception):
    """Base of every public roomcast exception."""
