"""The default backplane: one process, everything in memory, nothing awaited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from roomcast.backplane.base import Backplane, HistoryPage, PublishResult, RoomPosition, Sink
from roomcast.history import HistoryStore, new_epoch
from roomcast.protocol import MessageTemplate
from roomcast.settings import Settings


class MemoryBackplane(Backplane):
    """History, idempotency keys and presence in this process; a restart starts new epochs."""

    name = "memory"

    def __init__(self, settings: Settings, clock: Callable[[], float] = trio.current_time,
                 epoch_factory: Callable[[], str] = new_epoch) -> None:
        self.clock = clock
        self.store = HistoryStore(
            settings.history_size,
            settings.history_ttl,
            idempotency_window=settings.idempotency_window,
            idempotency_max_keys=settings.idempotency_max_keys,
            epoch_factory=epoch_factory,
        )
        self._presence: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {}
        self._watched: set[str] = set()
        self._user_connections: dict[str, int] = {}
        self._sink: Sink | None = None
        self._prune_period = max(1.0, min(settings.history_ttl or 60.0, 60.0) / 2)

    @property
    def ready(self) -> bool:
        return True

    async def run(
        self, sink: Sink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._sink = sink
        task_status.started()
        while True:
            await trio.sleep(self._prune_period)
            self.prune()

    def prune(self) -> None:
        """Forget rooms with nothing held, no live idempotency key and nobody here."""
        self.store.prune(self.clock(), keep=self._watched)

    def attach(self, sink: Sink) -> None:
        """Deliver to `sink` without running (for driving the backplane synchronously)."""
        self._sink = sink

    def _require_sink(self) -> Sink:
        if self._sink is None:
            raise RuntimeError("the backplane is not running: start Backplane.run first")
        return self._sink

    async def publish(
        self, room: str, template: MessageTemplate, event: str | None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        sink = self._require_sink()
        outcome = self.store.publish(room, self.clock(), template.build, idempotency_key)
        if outcome.entry is not None:
            sink.deliver(room, outcome.offset, outcome.entry.payload, event)
        return PublishResult(outcome.offset, outcome.epoch, outcome.duplicate)

    async def position(self, room: str, since: tuple[int, str] | None = None) -> RoomPosition:
        now = self.clock()
        log = self.store.room(room, now)
        if since is None:
            return RoomPosition(log.offset, log.epoch)
        recovery = log.since(since[0], since[1], now)
        return RoomPosition(
            log.offset,
            log.epoch,
            recovery.recovered,
            [(e.offset, e.payload) for e in recovery.messages],
            recovery.missed,
        )

    async def watch(self, room: str) -> None:
        self._watched.add(room)

    async def unwatch(self, room: str) -> None:
        self._watched.discard(room)

    async def history(self, room: str, since: int | None, limit: int) -> HistoryPage:
        now = self.clock()
        log = self.store.room(room, now)
        entries = log.history(since, limit, now)
        return HistoryPage(log.offset, log.epoch, [e.payload for e in entries])

    async def presence_update(
        self, room: str, user_id: str, info: dict[str, Any], connections: int
    ) -> None:
        sink = self._require_sink()
        users = self._presence.setdefault(room, {})
        had = user_id in users
        if connections > 0:
            users[user_id] = (connections, info)
            if not had:
                if len(users) == 1 and self.transitions is not None:
                    self.transitions.transition("room", room, True)
                sink.presence_changed(room, user_id, info, True)
            return
        users.pop(user_id, None)
        if not users:
            del self._presence[room]
            if had and self.transitions is not None:
                self.transitions.transition("room", room, False)
        if had:
            sink.presence_changed(room, user_id, None, False)

    def user_connections(self, user_id: str, connections: int) -> None:
        before = self._user_connections.get(user_id, 0)
        if connections > 0:
            self._user_connections[user_id] = connections
        else:
            self._user_connections.pop(user_id, None)
        if self.transitions is not None and (before > 0) != (connections > 0):
            self.transitions.transition("user", user_id, connections > 0)

    async def presence(self, room: str) -> list[dict[str, Any]]:
        return [
            {"user_id": user, "connections": count, "info": info}
            for user, (count, info) in self._presence.get(room, {}).items()
        ]

    async def send_control(self, kind: str, payload: dict[str, Any]) -> None:
        self._require_sink().control(kind, payload)
