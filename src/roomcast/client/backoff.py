"""When the client comes back after a close: which close codes stop it for good, and how
long it waits before the next attempt (exponential backoff with jitter). Pure: no IO."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from roomcast.codes import CloseCode

__all__ = ["DEAD_LINK", "DEFAULT_BACKOFF", "STOP_CODES", "Backoff"]

#: Close codes after which the client does not reconnect (4401 only without a new token).
STOP_CODES: Final = frozenset({
    CloseCode.NORMAL, CloseCode.TOO_BIG, CloseCode.PROTOCOL_VIOLATION,
    CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN,
})
#: The client's own code for a link that stopped answering pings (never sent by a server).
DEAD_LINK: Final = 4008


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: attempt n waits up to min(maximum, initial × factor**n) seconds,
    less a random share of it (jitter 1 = full jitter, 0 = none). After 4429 the
    series starts at `long_initial` instead."""

    initial: float = 0.5
    factor: float = 1.5
    maximum: float = 30.0
    jitter: float = 1.0
    long_initial: float = 5.0

    def delay(self, attempt: int, code: int | None = None,
              rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before attempt `attempt` (0-based) after a close with `code`."""
        if code == CloseCode.GOING_AWAY:  # draining: come back at once, spread out
            return self.initial * (1 - rand())
        start = (max(self.long_initial, self.initial) if code == CloseCode.TOO_MANY
                 else self.initial)
        ceiling = min(self.maximum, start * self.factor ** min(attempt, 1000))
        return ceiling * (1 - self.jitter * rand())


#: The delays a client uses unless told otherwise.
DEFAULT_BACKOFF: Final = Backoff()
