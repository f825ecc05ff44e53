"""What the Router needs from a backplane, and what a backplane calls back.

The Router publishes, reads history and presence, and sends cluster-wide control
events through it; the backplane hands every room message (from this node or another)
back to the Router's `Sink`, so one node and many nodes run the same path.
"""

from __future__ import annotations

import abc
from typing import Any, Protocol

import trio

from roomcast.errors import RoomcastError
from roomcast.protocol import MessageTemplate
from roomcast.streams import HistoryPage, PublishResult, RoomPosition

__all__ = ["Backplane", "BackplaneUnavailable", "HistoryPage", "PublishResult", "RoomPosition",
           "Sink", "Transitions"]


class BackplaneUnavailable(RoomcastError):
    """The backplane cannot be reached; the operation did not happen. Retry later."""


class Sink(Protocol):
    """The Router's side: called by the backplane for everything that reaches this node."""

    def deliver(self, room: str, offset: int, payload: bytes, event: str | None) -> None:
        """A message published in `room` (on any node)."""

    def presence_changed(
        self, room: str, user_id: str, info: dict[str, Any] | None, joined: bool
    ) -> None:
        """A user's first connection entered `room`, or its last one left (cluster-wide)."""

    def control(self, kind: str, payload: dict[str, Any]) -> None:
        """A cluster-wide instruction: `disconnect` or `revoke`."""

    def reset(self, room: str, epoch: str, offset: int, missed: tuple[int, int] | None
              ) -> None:
        """The room's stream changed under its live subscribers (protocol §17): a new epoch
        (Redis restarted empty, a failover lost writes), or a gap in the current one that
        history can no longer fill. Called before the first message delivered after it;
        delivery resumes after `offset`, and `missed` (inclusive offsets) is what of the
        stream this node knows it cannot deliver."""

    def resumed(self) -> None:
        """The backplane reconnected after losing its connection; call before delivering
        the first message after it (room offsets may have started over)."""


class Transitions(Protocol):
    """Who hears cluster-wide occupancy changes (protocol §13: roomcast.events_sender)."""

    def transition(self, kind: str, name: str, up: bool, seq: int | None = None,
                   confirmed: int | None = None, confirmed_wall: float | None = None) -> None:
        """`kind` "room" (subscribers) or "user" (connections) `name` went from none to
        some (`up`) or from some to none, anywhere. A shared backplane numbers the key's
        transitions (`seq`), reports an "up" only when it is news, and names in
        `confirmed` a "gone" this node is to send first (roomcast.events.Debouncer.up)."""

    def gone(self, kind: str, name: str, seq: int, wall: float) -> None:
        """A "gone" held by a node that stopped, found overdue: send it now."""


class Backplane(abc.ABC):
    """Offsets, history, idempotency, presence and control, for one node or many."""

    name: str = "backplane"
    transitions: Transitions | None = None  # set while room and user events are on

    @abc.abstractmethod
    async def run(
        self, sink: Sink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, call task_status.started(), then carry messages to `sink` until cancelled."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """Whether the backplane is reachable now (drives /readyz)."""

    @abc.abstractmethod
    async def publish(
        self, room: str, template: MessageTemplate, event: str | None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """Assign the room's next offset, keep the message in history and deliver it to
        every node's sink. A repeated idempotency_key gets the first offset, duplicate=True."""

    @abc.abstractmethod
    async def position(self, room: str, since: tuple[int, str] | None = None) -> RoomPosition:
        """The room's offset and epoch; with since=(offset, epoch), the recovery too."""

    async def publish_many(
        self, room: str, messages: list[tuple[MessageTemplate, str | None, str | None]],
    ) -> list[PublishResult]:
        """Several (template, event, idempotency_key) to one room, in order; each answers as
        `publish` would have. A backplane that can makes it one round trip in which they
        take consecutive offsets."""
        return [await self.publish(room, template, event, key)
                for template, event, key in messages]

    async def positions(self, rooms: list[tuple[str, tuple[int, str] | None]]
                        ) -> list[RoomPosition | BackplaneUnavailable]:
        """`position` for each (room, since), in order; a room that cannot be read gets the
        BackplaneUnavailable instead of failing the others."""
        out: list[RoomPosition | BackplaneUnavailable] = []
        for room, since in rooms:
            try:
                out.append(await self.position(room, since))
            except BackplaneUnavailable as exc:
                out.append(exc)
        return out

    @abc.abstractmethod
    async def history(self, room: str, since: int | None, limit: int) -> HistoryPage:
        """Held messages after `since` (the first `limit`), or the newest `limit`."""

    async def watch(self, room: str) -> None:  # noqa: B027 - optional hook
        """This node has its first local subscriber in `room`."""

    async def unwatch(self, room: str) -> None:  # noqa: B027 - optional hook
        """This node's last local subscriber left `room`."""

    @abc.abstractmethod
    async def presence_update(
        self, room: str, user_id: str, info: dict[str, Any], connections: int
    ) -> None:
        """This node now holds `connections` of the user's connections in `room` (0: none).
        The backplane calls sink.presence_changed when the cluster-wide count leaves or
        reaches zero."""

    def user_connections(self, user_id: str, connections: int) -> None:  # noqa: B027
        """This node now holds `connections` of the user's connections (0: none). Never
        waits; with `transitions` set, the user's cluster-wide changes are reported."""

    async def still_gone(self, kind: str, name: str, seq: int | None) -> bool:
        """Whether a key reported gone (transition `seq`) is still gone cluster-wide, so
        its event may be sent; a lone node's own bookkeeping already says so."""
        return True

    @abc.abstractmethod
    async def presence(self, room: str) -> list[dict[str, Any]]:
        """[{"user_id", "connections", "info"}] across every node."""

    @abc.abstractmethod
    async def send_control(self, kind: str, payload: dict[str, Any]) -> None:
        """Deliver a control event to every node's sink, this one included."""

    async def stats(self) -> dict[str, Any]:
        """Cluster-wide counts where cheap; empty when this node is alone."""
        return {}
