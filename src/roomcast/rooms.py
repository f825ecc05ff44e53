"""The routing table, sans IO: rooms → subscriptions with filters, and local presence.

Generic over the subscriber handle (the router uses its connection objects), so the
table can be tested and fuzzed on its own. Presence is counted per user, so a user's
first connection in a room and its last one are the `joined` and `left` moments.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

S = TypeVar("S", bound=Hashable)

_MISSING = object()


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON means it: `true` is not `1`, `1` is `1.0`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return (type(a) is type(b) and a == b) or (
        isinstance(a, int | float) and isinstance(b, int | float) and a == b
    )


@dataclass(slots=True, eq=False)
class Subscription(Generic[S]):
    """One subscriber in one room, with its filters."""

    subscriber: S
    user_id: str
    events: frozenset[str] | None = None
    where: dict[str, Any] | None = None
    presence: bool = False
    # While a subscribe with `since` is being answered, live messages wait here
    # (offset, frame) so that none overtakes the recovered ones.
    held: list[tuple[int, bytes]] | None = None
    # The room's offset when the subscription was answered: a message at or below it that
    # arrives late from another node was already covered (sent in recovery, or older than
    # the subscription) and is skipped. Cleared by the first message above it.
    floor: int | None = None
    # Made server-side (the server API or the token's `subscribe` claim, §12): the client
    # may subscribe to it again (e.g. with `since`) whatever its patterns say.
    server: bool = False

    def admits(self, event: str | None, data: Callable[[], Any]) -> bool:
        """Whether a message passes this subscription's `events` and `where` filters."""
        if self.events is not None and event not in self.events:
            return False
        if self.where:
            value = data()
            if not isinstance(value, dict):
                return False
            for key, wanted in self.where.items():
                if not json_equal(value.get(key, _MISSING), wanted):
                    return False
        return True


@dataclass(slots=True)
class PresenceEntry:
    connections: int
    info: dict[str, Any]


@dataclass
class RoutingTable(Generic[S]):
    """Who is subscribed where, and who is present in each room (this node only)."""

    rooms: dict[str, dict[S, Subscription[S]]] = field(default_factory=dict)
    by_subscriber: dict[S, dict[str, Subscription[S]]] = field(default_factory=dict)
    present: dict[str, dict[str, PresenceEntry]] = field(default_factory=dict)
    # Per room, the subscriptions made with presence=True (usually none), so that joined
    # and left events do not scan every subscription of a big room.
    watching: dict[str, dict[S, Subscription[S]]] = field(default_factory=dict)

    def subscribe(
        self,
        subscriber: S,
        room: str,
        user_id: str,
        info: dict[str, Any] | None = None,
        events: list[str] | None = None,
        where: dict[str, Any] | None = None,
        presence: bool = False,
    ) -> tuple[Subscription[S], bool, bool]:
        """Add or replace a subscription. Returns (it, is_new, the user just joined)."""
        subs = self.rooms.setdefault(room, {})
        old = subs.get(subscriber)
        sub = Subscription(
            subscriber,
            user_id,
            frozenset(events) if events is not None else None,
            where or None,
            presence,
        )
        subs[subscriber] = sub
        self.by_subscriber.setdefault(subscriber, {})[room] = sub
        if presence:
            self.watching.setdefault(room, {})[subscriber] = sub
        elif old is not None and old.presence:
            self._unwatch(room, subscriber)
        if old is not None:
            sub.held = old.held
            sub.server = old.server
            return sub, False, False
        users = self.present.setdefault(room, {})
        entry = users.get(user_id)
        if entry is None:
            users[user_id] = PresenceEntry(1, info or {})
            return sub, True, True
        entry.connections += 1
        return sub, True, False

    def unsubscribe(self, subscriber: S, room: str) -> tuple[bool, bool]:
        """Remove a subscription. Returns (it existed, its user just left the room)."""
        subs = self.rooms.get(room)
        sub = subs.pop(subscriber, None) if subs is not None else None
        if sub is None:
            return False, False
        if not subs:
            del self.rooms[room]
        if sub.presence:
            self._unwatch(room, subscriber)
        mine = self.by_subscriber[subscriber]
        del mine[room]
        if not mine:
            del self.by_subscriber[subscriber]
        users = self.present[room]
        entry = users[sub.user_id]
        entry.connections -= 1
        if entry.connections:
            return True, False
        del users[sub.user_id]
        if not users:
            del self.present[room]
        return True, True

    def drop(self, subscriber: S) -> list[tuple[str, str, bool]]:
        """Remove every subscription of one subscriber: [(room, user_id, user left)]."""
        out = []
        for room, sub in list(self.by_subscriber.get(subscriber, {}).items()):
            _, left = self.unsubscribe(subscriber, room)
            out.append((room, sub.user_id, left))
        return out

    def subscriptions(self, subscriber: S) -> dict[str, Subscription[S]]:
        return self.by_subscriber.get(subscriber, {})

    def get(self, subscriber: S, room: str) -> Subscription[S] | None:
        subs = self.rooms.get(room)
        return subs.get(subscriber) if subs is not None else None

    def recipients(
        self, room: str, event: str | None, data: Callable[[], Any]
    ) -> Iterator[Subscription[S]]:
        """The subscriptions a message admits, in subscription order."""
        subs = self.rooms.get(room)
        if not subs:
            return
        for sub in list(subs.values()):
            if (sub.events is None and sub.where is None) or sub.admits(event, data):
                yield sub

    def _unwatch(self, room: str, subscriber: S) -> None:
        watchers = self.watching.get(room)
        if watchers is not None:
            watchers.pop(subscriber, None)
            if not watchers:
                del self.watching[room]

    def watchers(self, room: str) -> list[Subscription[S]]:
        """Subscriptions that asked for joined/left events."""
        return list(self.watching.get(room, {}).values())

    def presence(self, room: str) -> dict[str, PresenceEntry]:
        return self.present.get(room, {})
