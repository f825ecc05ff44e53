"""Room and user events across nodes (protocol §13): Redis numbers every transition.

A room's transitions come out of the presence script (its first user anywhere, its last
one gone); a user's out of `user_set`, which keeps each node's count of the user's live
connections. The script that made a transition tells this node, whose sender sends it;
a "gone" is checked against Redis once `events_delay` has passed (`still_gone`), and one
that comes back sooner is no news to any node. A dead node's users and rooms are reaped
by another node's heartbeat, whose scripts report their "gone" transitions just the same.
"""

from __future__ import annotations

from typing import Any

import trio

from roomcast.backplane.base import Transitions
from roomcast.backplane.redis.commands import FAILURES, Commands, describe
from roomcast.backplane.redis.keys import presence_keys, room_events_key, user_keys, user_member
from roomcast.backplane.redis.scripts import EVENT_GONE, USER_SET
from roomcast.log import event as log_event

KEEP_MS = 30 * 86400 * 1000  # a key's transition numbering outlives 30 quiet days


class Events(Commands):
    """user_connections / still_gone, and the reports of the scripts' transitions."""

    transitions: Transitions | None
    _users: dict[str, int]
    _users_dirty: set[str]
    _users_kick: trio.Event
    _presence_ttl_ms: int
    _index: str

    def _events_args(self) -> list[Any]:
        """The presence and reap scripts' trailing arguments: events_delay in ms ("" when
        room events are off) and how long a numbering is kept."""
        if self.transitions is None:
            return ["", KEEP_MS]
        return [int(self.settings.events_delay * 1000), KEEP_MS]

    def _report(self, kind: str, name: str, reply: list[Any]) -> None:
        """Pass a script's {dir, seq, confirmed} on to the sender."""
        if self.transitions is None:
            return
        direction, seq, confirmed = (int(x) for x in reply[:3])
        if direction == 1:
            self.transitions.transition(kind, name, True, seq, confirmed or None)
        elif direction == -1:
            self.transitions.transition(kind, name, False, seq)

    def _reaped(self, reply: Any) -> bool:
        """A reap step's reply: report the rooms and users it emptied; True once done."""
        if not isinstance(reply, list):
            return int(reply) == 1
        for i in range(1, len(reply) - 2, 3):
            kind, name = bytes(reply[i]).decode(), bytes(reply[i + 1]).decode()
            self._report(kind, name, [-1, reply[i + 2], 0])
        return int(reply[0]) == 1

    def user_connections(self, user_id: str, connections: int) -> None:
        """Record this node's count of the user's connections; pushed to Redis in order by
        `_user_pusher` (only while room and user events are on)."""
        if self.transitions is None:
            return
        if connections > 0:
            self._users[user_id] = connections
        else:
            self._users.pop(user_id, None)
        self._users_dirty.add(user_id)
        self._users_kick.set()

    async def _user_pusher(self) -> None:
        """Push changed user counts as they come; what fails waits for the heartbeat."""
        while True:
            await self._users_kick.wait()
            self._users_kick = trio.Event()
            if self._ready:
                await self._push_users()

    async def _push_users(self) -> None:
        for user in list(self._users_dirty):
            self._users_dirty.discard(user)
            count, ev = user_keys(user)
            try:
                reply = await self._exec(USER_SET, [count, ev, self._index], [
                    self.instance, self._users.get(user, 0), user_member(user),
                    *self._events_args(), 3 * self._presence_ttl_ms])
            except FAILURES as exc:
                self._users_dirty.add(user)
                log_event("could not record a user's connections in redis", 30,
                          redis=self.where, error=describe(exc))
                return
            self._report("user", user, reply)

    async def still_gone(self, kind: str, name: str, seq: int | None) -> bool:
        """Whether the "gone" numbered `seq` still holds across the cluster (Redis answers,
        or BackplaneUnavailable)."""
        if kind == "room":
            keys = [room_events_key(name), presence_keys(name)[1]]
        else:
            count, ev = user_keys(name)
            keys = [ev, count]
        return int(await self._call(EVENT_GONE, keys, [seq if seq is not None else 0])) == 1
