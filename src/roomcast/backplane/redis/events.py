"""Room and user events across nodes (protocol §13): Redis numbers every transition.

A room's transitions come out of the presence script (its first user anywhere, its last
one gone); a user's out of `user_set`, which keeps each node's count of the user's live
connections. The script that made a transition tells this node, whose sender sends it.
A "gone" also waits in Redis for `events_delay`, as `pending` in the room's (user's) own
numbering hash: whoever clears it first acts on it, once — its node when due
(`still_gone`), a return (no news when sooner than the delay; after it, the returning node
sends both), or the heartbeat's sweep of another node when its own node stopped first. The
sweep finds them in a node-wide index (`rc:{rc}:evdue`, another hash slot on a Redis
Cluster), written before any script that may leave a room or user gone, so a node that dies
right after the transition still leaves it indexed; an entry with nothing pending is
dropped by the sweep. A dead node's users and rooms are reaped by another node's
heartbeat, whose scripts report their "gone" transitions just the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from roomcast.backplane.base import Transitions
from roomcast.backplane.redis.commands import FAILURES, Commands, describe
from roomcast.backplane.redis.keys import (
    EVENTS_DUE,
    NODES,
    NODESTATS,
    node_index,
    presence_keys,
    room_channel,
    room_events_key,
    user_keys,
    user_member,
)
from roomcast.backplane.redis.scripts import (
    DUE_ADD,
    DUE_DROP,
    EVENT_CLAIM,
    EVENT_GONE,
    EVENT_SWEEP,
    INDEX,
    REAP,
    REAP_ROOM,
    REAP_USER,
    USER_SET,
    Script,
)
from roomcast.log import event as log_event

KEEP_MS = 30 * 86400 * 1000  # a key's transition numbering outlives 30 quiet days
SWEEP_GRACE_MS = 1000  # a "gone" this overdue is taken by whichever node sweeps first
Run = Callable[[Script, list[str], list[Any]], Awaitable[Any]]


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

    def _ev_key(self, kind: str, name: str) -> str:
        return room_events_key(name) if kind == "room" else user_keys(name)[1]

    def _report(self, kind: str, name: str, reply: list[Any]) -> None:
        """Pass a script's {dir, seq, gone, gone_ms} on to the sender."""
        if self.transitions is None:
            return
        direction, seq, gone, gone_ms = (int(x) for x in reply)
        if direction == 1:
            self.transitions.transition(kind, name, True, seq, gone or None,
                                        gone_ms / 1000 if gone else None)
        elif direction == -1:
            self.transitions.transition(kind, name, False, seq)

    async def _index_gone(self, kind: str, name: str, run: Run | None = None) -> None:
        """Before a script that may leave `name` gone: index it for the sweep (room and
        user events on only)."""
        if self.transitions is not None:
            await (run or self._exec)(DUE_ADD, [EVENTS_DUE], [
                f"{kind}\0{name}", self._delay_ms()])

    async def _counted(self, kind: str, name: str, member: str, count: int, script: Script,
                       keys: list[str], args: list[Any]) -> Any:
        """Run a script that writes this node's `count` of `member` (a user in a room, or a
        user's connections) with the node's index kept around it: indexed before a count
        is written, taken out after a 0 is, so a reaper finds whatever this node leaves;
        before a 0, `name` is indexed for the sweep too, since it may become gone."""
        if count > 0:
            await self._exec(INDEX, [self._index], ["1", 3 * self._presence_ttl_ms, member])
        else:
            await self._index_gone(kind, name)
        reply = await self._exec(script, keys, args)
        if count == 0:
            await self._exec(INDEX, [self._index], ["0", 0, member])
        return reply

    async def _reap(self, node: str, only_if_dead: bool, run: Run) -> None:
        """Remove a node's presence and user entries, a hundred at a time: each in its own
        slot (publishing `left`, reporting emptied rooms and users), then from the node's
        index, so a reaper that dies half way leaves them for the next one."""
        index = node_index(node)
        delay = self._delay_ms()
        for _ in range(1000):
            reply = await run(REAP, [NODES, NODESTATS, index],
                              [node, "1" if only_if_dead else "0"])
            if int(reply[0]) != 0:
                return
            members = [bytes(m) for m in reply[1:]]
            for member in members:
                room, _, user = member.decode(errors="replace").partition("\0")
                if not room:
                    count, ev = user_keys(user)
                    await self._index_gone("user", user, run)
                    result = await run(REAP_USER, [count, ev], [node, delay, KEEP_MS])
                    self._report("user", user, result)
                else:
                    p, pu = presence_keys(room)
                    await self._index_gone("room", room, run)
                    result = await run(REAP_ROOM, [p, pu, room_events_key(room)], [
                        node, user, room_channel(room), delay, KEEP_MS])
                    self._report("room", room, result)
            await run(INDEX, [index], ["0", 0, *members])

    async def _sweep_events(self) -> None:
        """Take the "gone" events their own node left overdue (it stopped) and send them."""
        if self.transitions is None:
            return
        reply = await self._exec(EVENT_SWEEP, [EVENTS_DUE], [SWEEP_GRACE_MS])
        for i in range(0, len(reply) - 1, 2):
            member, score = bytes(reply[i]), reply[i + 1]
            kind, _, name = member.decode().partition("\0")
            claim = await self._exec(EVENT_CLAIM, [self._ev_key(kind, name)], [
                self._delay_ms(), SWEEP_GRACE_MS])
            if int(claim[0]) == 1:
                self.transitions.gone(kind, name, int(claim[1]), int(claim[2]) / 1000)
            later = [int(claim[1])] if int(claim[0]) == 2 else []  # pending, not due yet
            await self._exec(DUE_DROP, [EVENTS_DUE], [member, score, *later])

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
            n = self._users.get(user, 0)
            try:
                reply = await self._counted("user", user, user_member(user), n, USER_SET,
                                            [count, ev],
                                            [self.instance, n, self._delay_ms(), KEEP_MS])
            except FAILURES as exc:
                self._users_dirty.add(user)
                log_event("could not record a user's connections in redis", 30,
                          redis=self.where, error=describe(exc))
                return
            self._report("user", user, reply)

    async def still_gone(self, kind: str, name: str, seq: int | None) -> bool:
        """Take the "gone" numbered `seq` out of Redis: True when this node did (nobody
        came back and no other node sent it), so it is the one to send it."""
        number = seq if seq is not None else 0
        claimed = await self._call(EVENT_GONE, [self._ev_key(kind, name)], [number])
        return int(claimed) == 1  # its index entry is dropped by a later sweep
