"""Room and user events across nodes (protocol §13): Redis numbers every transition.

A room's transitions come out of the presence script (its first user anywhere, its last
one gone); a user's out of `user_set`, which keeps each node's count of the user's live
connections. The script that made a transition tells this node, whose sender sends it.
A "gone" also waits in Redis (`rc:evdue`) for `events_delay`: whoever takes it out first
acts on it, once — its node when due (`still_gone`), a return (no news when sooner than
the delay; after it, the returning node sends both), or the heartbeat's sweep of another
node when its own node stopped first. A dead node's users and rooms are reaped by another
node's heartbeat, whose scripts report their "gone" transitions just the same.
"""

from __future__ import annotations

from typing import Any

import trio

from roomcast.backplane.base import Transitions
from roomcast.backplane.redis.commands import FAILURES, Commands, describe
from roomcast.backplane.redis.keys import EVENTS_DUE, user_keys, user_member
from roomcast.backplane.redis.scripts import EVENT_GONE, EVENT_SWEEP, USER_SET
from roomcast.log import event as log_event

KEEP_MS = 30 * 86400 * 1000  # a key's transition numbering outlives 30 quiet days
SWEEP_GRACE_MS = 1000  # a "gone" this overdue is taken by whichever node sweeps first


class Events(Commands):
    """user_connections / still_gone, and the reports of the scripts' transitions."""

    transitions: Transitions | None
    _users: dict[str, int]
    _users_dirty: set[str]
    _users_kick: trio.Event
    _presence_ttl_ms: int
    _index: str

    def _delay_ms(self) -> int | str:
        """events_delay in ms for the scripts; "" while room events are off here."""
        if self.transitions is None:
            return ""
        return int(self.settings.events_delay * 1000)

    def _report(self, kind: str, name: str, reply: list[Any]) -> None:
        """Pass a script's {dir, seq, gone, gone_ms} on to the sender."""
        if self.transitions is None:
            return
        direction, seq, gone, gone_ms = (int(x) for x in reply[:4])
        if direction == 1:
            self.transitions.transition(kind, name, True, seq, gone or None,
                                        gone_ms / 1000 if gone else None)
        elif direction == -1:
            self.transitions.transition(kind, name, False, seq)

    def _reaped(self, reply: Any) -> bool:
        """A reap step's reply: report the rooms and users it emptied; True once done."""
        if not isinstance(reply, list):
            return int(reply) == 1
        for i in range(1, len(reply) - 2, 3):
            kind, name = bytes(reply[i]).decode(), bytes(reply[i + 1]).decode()
            self._report(kind, name, [-1, reply[i + 2], 0, 0])
        return int(reply[0]) == 1

    async def _sweep_events(self) -> None:
        """Take the "gone" events their own node left overdue (it stopped) and send them."""
        if self.transitions is None:
            return
        reply = await self._exec(EVENT_SWEEP, [EVENTS_DUE],
                                 [SWEEP_GRACE_MS, self._delay_ms()])
        for i in range(0, len(reply) - 1, 2):
            kind, name, seq = bytes(reply[i]).decode().split("\0")
            self.transitions.gone(kind, name, int(seq), int(float(reply[i + 1])) / 1000)

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
                reply = await self._exec(USER_SET, [count, ev, self._index, EVENTS_DUE], [
                    self.instance, self._users.get(user, 0), user_member(user),
                    self._delay_ms(), KEEP_MS, 3 * self._presence_ttl_ms, user])
            except FAILURES as exc:
                self._users_dirty.add(user)
                log_event("could not record a user's connections in redis", 30,
                          redis=self.where, error=describe(exc))
                return
            self._report("user", user, reply)

    async def still_gone(self, kind: str, name: str, seq: int | None) -> bool:
        """Take the "gone" numbered `seq` out of Redis: True when this node did (nobody
        came back and no other node sent it), so it is the one to send it."""
        member = f"{kind}\0{name}\0{seq if seq is not None else 0}"
        return int(await self._call(EVENT_GONE, [EVENTS_DUE], [member])) == 1
