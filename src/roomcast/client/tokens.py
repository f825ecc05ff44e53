"""Tokens and clocks: what a token source may be, when a JWT expires, and the server's
clock as the `connected` frame tells it. Pure: no IO."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from datetime import datetime

__all__ = ["TokenSource", "parse_time", "token_expiry"]

TokenSource = str | Callable[[], str | Awaitable[str]]


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (unix seconds), or None; the signature is not checked."""
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
    except (IndexError, ValueError):
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def parse_time(text: str) -> float | None:
    """An ISO 8601 time (`...Z`) as unix seconds, or None when it is not one."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None
