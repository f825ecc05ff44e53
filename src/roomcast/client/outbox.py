"""Commands waiting for their replies, across connections: which ones are sent again on
the next connection (a publish, with its idempotency key: it is delivered once however
often it is sent) and which ones are lost with the connection they went out on (the
caller gets ConnectionLost and decides). Pure: no IO; each shell keeps only its own
waiting primitive per command id."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

__all__ = ["Outbox", "Pending"]


@dataclass(eq=False, slots=True)
class Pending:
    """A command sent (or to send) and not yet answered."""

    id: int
    frame: dict[str, Any]  # as sent, its `id` included
    resend: bool  # sent again on every new connection until answered
    sent_on: int | None = None  # the connection it last went out on


class Outbox:
    """Every command of a client not yet answered, and the connection count."""

    def __init__(self) -> None:
        self.pending: dict[int, Pending] = {}
        self.connection = 0  # the current (or last) connection's number; 0: none yet
        self.up = False  # a connection is open and commands may go out on it
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        """An id no other command of this client has (subscribe commands use these too)."""
        return next(self._ids)

    def add(self, frame: dict[str, Any], *, resend: bool) -> Pending:
        """A new command; the caller sends `pending.frame` now when `up` (then calls
        `sent`), else the next connection sends it when it is one to resend."""
        command_id = self.next_id()
        pending = Pending(command_id, {**frame, "id": command_id}, resend)
        self.pending[command_id] = pending
        return pending

    def sent(self, pending: Pending) -> None:
        """The command went out on the current connection."""
        pending.sent_on = self.connection

    def reply(self, command_id: Any) -> Pending | None:
        """A reply arrived: the command it answers (no longer pending), or None."""
        return self.pending.pop(command_id, None) if isinstance(command_id, int) else None

    def drop(self, pending: Pending) -> None:
        """The caller gave up (a time-out): not sent again, a late reply is ignored."""
        self.pending.pop(pending.id, None)

    def connected(self) -> list[Pending]:
        """A new connection is up: the commands to send on it now (those to resend, in
        the order they were made, and those made while there was none)."""
        self.connection += 1
        self.up = True
        return [p for p in self.pending.values() if p.resend or p.sent_on is None]

    def lost(self) -> list[Pending]:
        """The connection closed: the commands that went out on it and are not sent
        again, now failed (their callers get ConnectionLost). The others stay."""
        self.up = False
        gone = [p for p in self.pending.values()
                if not p.resend and p.sent_on == self.connection]
        for pending in gone:
            del self.pending[pending.id]
        return gone
