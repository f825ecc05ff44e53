"""Collecting calls for one `/api/batch` request: the same methods as the clients, each
adding a command; sending answers one result (or ApiError) per command, in order.
Publishes keep their idempotency keys, so a retried batch delivers nothing twice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from roomcast.api.calls import Call

__all__ = ["MAX_BATCH", "Commands"]

MAX_BATCH = 1000  # commands in one /api/batch (protocol §15)


class Commands:
    """Calls gathered for one batch; `Client.batch()` and `AsyncClient.batch()` add
    `send()`."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def __len__(self) -> int:
        return len(self.calls)

    def add(self, call: Call) -> int:
        """Add a call; its index in the results."""
        if len(self.calls) >= MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} commands; send this one "
                             "and start another")
        self.calls.append(call)
        return len(self.calls) - 1

    def publish(self, room: str, data: Any, *, event: str | None = None,
                idempotency_key: str | None = None) -> int:
        """Add a publish (its result: PublishResult)."""
        return self.add(Call.publish(room, data, event, idempotency_key))

    def broadcast(self, rooms: Sequence[str], data: Any, *, event: str | None = None) -> int:
        """Add a broadcast (BroadcastResult)."""
        return self.add(Call.broadcast(rooms, data, event))

    def disconnect(self, user_id: str, *, code: int | None = None,
                   reason: str | None = None) -> int:
        """Add a disconnect (the number closed)."""
        return self.add(Call.disconnect(user_id, code, reason))

    def revoke(self, jti: str, *, expires_at: float | str | None = None) -> int:
        """Add a revoke (None)."""
        return self.add(Call.revoke(jti, expires_at))

    def subscribe(self, user_id: str, room: str, *, connection_id: str | None = None) -> int:
        """Add a server-side subscribe (the number subscribed)."""
        return self.add(Call.subscribe(user_id, room, connection_id))

    def unsubscribe(self, user_id: str, room: str, *,
                    connection_id: str | None = None) -> int:
        """Add a server-side unsubscribe (the number unsubscribed)."""
        return self.add(Call.unsubscribe(user_id, room, connection_id))

    def presence(self, room: str) -> int:
        """Add a presence query (PresenceResult)."""
        return self.add(Call.presence(room))

    def history(self, room: str, *, since: int | None = None, limit: int | None = None) -> int:
        """Add a history query (HistoryResult)."""
        return self.add(Call.history(room, since, limit))

    def stats(self) -> int:
        """Add a stats query (Stats)."""
        return self.add(Call.stats())


def batch_call(calls: Sequence[Call]) -> Call:
    """The `/api/batch` request for `calls`; its answer is parsed by the caller, per
    command. Idempotent when every command is."""
    if not calls:
        raise ValueError("an empty batch: add commands before sending it")
    return Call("batch", "POST", {"commands": [c.command() for c in calls]}, dict,
                idempotent=all(c.idempotent for c in calls))
