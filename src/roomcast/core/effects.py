"""What the routing core asks its actor to do: the core decides, these say what it decided.

Sends and closes are done at once and in order; an `Ask` is a question for the backplane
whose answer goes back into the core (`then`), so every await lives outside the core.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roomcast.core.peer import Peer


@dataclass(slots=True)
class Send:
    """One ready WebSocket frame for one connection."""

    peer: Peer
    frame: bytes


@dataclass(slots=True)
class Fanout:
    """One message, framed once, for many connections (the same bytes for each)."""

    frame: bytes
    peers: list[Peer]


@dataclass(slots=True)
class Close:
    """Close a connection with a code that tells the client whether to come back."""

    peer: Peer
    code: int
    reason: str


@dataclass(slots=True)
class Ask:
    """Call `method(*args)` on the backplane, then feed the answer to `then` (None: the
    answer is not needed). When the backplane is unreachable, `unavailable` says what to
    do instead; without one the failure goes to whoever performs the effects."""

    method: str
    args: tuple[Any, ...]
    then: Callable[[Any], Effects] | None = None
    unavailable: Callable[[Exception], Effects] | None = None


@dataclass(slots=True)
class RunCommand:
    """Run an application's own command handler (`@router.command`); `then` turns its
    answer (or the exception it raised) into the reply."""

    peer: Peer
    name: str
    payload: dict[str, Any]
    then: Callable[[Any, BaseException | None], Effects]


@dataclass(slots=True)
class CallHook:
    """Ask the application over HTTP (§11): hook `name` with `body`; `then` turns its
    outcome (`roomcast.hookwire`: allowed, denied or failed) into effects."""

    name: str
    body: dict[str, Any]
    then: Callable[[Any], Effects]


@dataclass(slots=True)
class CallHooks:
    """Several hook requests at once (one per room of a subscribe): `then` gets their
    outcomes in the same order, once all are in (each within hook_timeout)."""

    calls: list[tuple[str, dict[str, Any]]]
    then: Callable[[list[Any]], Effects]


Effect = Send | Fanout | Close | Ask | RunCommand | CallHook | CallHooks
Effects = Sequence[Effect]
NOTHING: Effects = ()
