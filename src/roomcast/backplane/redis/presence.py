"""Presence across nodes, and the node's heartbeat that keeps it honest.

Each node records its own connection count per (room, user) and pushes it to Redis; Redis
keeps the cluster-wide totals and publishes `joined`/`left` when one leaves or reaches zero.
A heartbeat registers the node, resends what could not be sent, keeps live rooms' keys from
expiring, and reaps the presence of nodes whose heartbeat ran out.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
import trio

from roomcast.backplane.base import Sink
from roomcast.backplane.redis.commands import FAILURES, Commands, describe
from roomcast.backplane.redis.events import KEEP_MS, Events
from roomcast.backplane.redis.keys import (
    NODES,
    NODESTATS,
    presence_keys,
    room_channel,
    room_events_key,
    room_keys,
    room_slot_key,
)
from roomcast.backplane.redis.scripts import (
    ALIVE,
    HEARTBEAT,
    PRESENCE_GET,
    PRESENCE_SET,
    RENEW,
)
from roomcast.log import event as log_event

_json_encode = msgspec.json.encode


class Presence(Events, Commands):
    """presence_update / presence, and the heartbeat loop."""

    _mine: dict[tuple[str, str], tuple[int, bytes]]
    _dirty: set[tuple[str, str]]
    _inflight: set[tuple[str, str]]
    _kick: trio.Event
    _registered: bool
    _presence_ttl: float
    _presence_ttl_ms: int
    _room_ttl_ms: int
    _index: str

    def _watched_rooms(self) -> list[str]:
        """The rooms this node has local subscribers in (their keys are kept alive)."""
        raise NotImplementedError

    async def presence_update(
        self, room: str, user_id: str, info: dict[str, Any], connections: int
    ) -> None:
        """Record this node's count and push it to Redis; while Redis is away the count
        waits and is pushed on reconnect, so this never fails."""
        key = (room, user_id)
        if connections > 0:
            self._mine[key] = (connections, _json_encode(info))
        else:
            self._mine.pop(key, None)
        self._dirty.add(key)
        if self._ready:
            await self._push_presence(key)

    async def _push_presence(self, key: tuple[str, str]) -> None:
        """Send the newest count for `key`; one sender per key at a time, so Redis always
        ends with the newest value whatever order replies come back in."""
        if key in self._inflight:
            return  # the sender in flight sends the newest value when it is done
        self._inflight.add(key)
        room, user = key
        p, pu = presence_keys(room)
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                count, info = self._mine.get(key, (0, b"{}"))
                reply = await self._counted(
                    "room", room, f"{room}\0{user}", count, PRESENCE_SET,
                    [p, pu, room_events_key(room)],
                    [self.instance, user, count, info, room_channel(room),
                     3 * self._presence_ttl_ms, self._delay_ms(), KEEP_MS])
                if isinstance(reply, list):
                    self._report("room", room, reply[1:])
        except FAILURES:
            self._dirty.add(key)  # sent again by the heartbeat once Redis answers
        except BaseException:
            self._dirty.add(key)
            raise
        finally:
            self._inflight.discard(key)

    async def presence(self, room: str) -> list[dict[str, Any]]:
        alive = cast(list[Any], await self._call(ALIVE, [NODES], []))
        reply = cast(list[Any], await self._call(PRESENCE_GET, [presence_keys(room)[0]], alive))
        users = []
        for i in range(0, len(reply), 3):
            try:
                info = msgspec.json.decode(reply[i + 2])
            except msgspec.DecodeError:
                info = {}
            users.append({"user_id": bytes(reply[i]).decode(errors="replace"),
                          "connections": int(reply[i + 1]), "info": info})
        users.sort(key=lambda u: str(u["user_id"]))
        return users

    async def _housekeeping(self, sink: Sink) -> None:
        """Every presence_ttl/3 (and at once after each reconnect): heartbeat, presence
        that could not be sent, key renewals, and the reaping of dead nodes."""
        period = self._presence_ttl / 3
        while True:
            with trio.move_on_after(period):
                await self._kick.wait()
            self._kick = trio.Event()
            if not self._ready:
                continue
            try:
                await self._heartbeat(sink)
            except FAILURES as exc:
                log_event("redis heartbeat failed", 30, redis=self.where, error=describe(exc))

    async def _heartbeat(self, sink: Sink) -> None:
        stats: dict[str, Any] = {"node": self.settings.node}
        local = getattr(sink, "stats", None)
        if callable(local):
            counts = local()
            stats["connections"] = counts.get("connections", 0)
            stats["users"] = counts.get("users", 0)
        reply = cast(list[Any], await self._exec(HEARTBEAT, [NODES, NODESTATS, self._index], [
            self.instance, self._presence_ttl_ms, _json_encode(stats)]))
        self._registered = True
        if int(reply[0]) == 1:
            self._dirty.update(self._mine)  # new here, or reaped while away: say it all again
            self._users_dirty.update(self._users)
        for key in list(self._dirty):
            await self._push_presence(key)
        await self._push_users()
        await self._renew()
        for dead in reply[1:]:
            node = bytes(dead).decode()
            await self._reap(node, True, self._exec)
            log_event("reaped a dead node's presence", node=node)
        await self._sweep_events()

    async def _renew(self) -> None:
        """Keep the stream keys of watched rooms and the presence keys of ours alive."""
        for rooms, keys_of, ttl in (
                (self._watched_rooms(), lambda r: room_keys(r)[:2], self._room_ttl_ms),
                (list({room for room, _ in self._mine}), presence_keys,
                 3 * self._presence_ttl_ms)):
            for group in self._groups(rooms, room_slot_key):
                await self._exec(RENEW, [k for room in group for k in keys_of(room)], [ttl])
