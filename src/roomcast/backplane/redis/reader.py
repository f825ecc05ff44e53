"""The receiving side of the Redis backplane: the pub/sub connections (one, or one per
primary of a Redis Cluster) carry every watched room's messages and presence events
(sharded pub/sub, `smessage`) and the control events (`message`) to the node's Sink.

Per node, the reader remembers the stream (epoch) and the last offset it delivered in each
room; a message that skips ahead (the pub/sub connection dropped while Redis stayed up)
first gets the missing ones from history, and one it has already delivered is dropped, so
local subscribers see each offset once and in order.

Nothing is skipped in silence (protocol §17). A message of another epoch than the room's
(Redis restarted empty, or failed over without the latest writes) or a catch-up that finds
the epoch changed makes the node read the new stream from its start in history and call
`sink.reset` first: delivery goes on after offset 0, or after the last offset no longer held
with `missed` saying so. A gap in the same stream that history can no longer fill is
announced the same way (same epoch, `missed` = the gap) before what follows it.

An epoch and an offset never name two messages (§16, §17). A Redis that lost acknowledged
writes (a failover to a replica that had not received them, a restart from an old
snapshot) keeps the room's epoch with a counter behind what nodes saw. Each node remembers
the highest (epoch, offset) it saw per room: every publish carries it (the script ends the
epoch before assigning an offset when the counter is behind), and each new session first
ends the epoch of every remembered room whose counter is behind (`_fence`), before the node
becomes ready. Messages of an epoch this node has left behind are dropped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import trio

from roomcast.backplane.base import Sink
from roomcast.backplane.redis.commands import Commands
from roomcast.backplane.redis.keys import (
    CONTROL_CHANNEL,
    REVOKED,
    entry_decoder,
    room_keys,
    room_slot_key,
    strip_time,
)
from roomcast.backplane.redis.scripts import FENCE, HISTORY, OFFSETS, REVOCATIONS
from roomcast.backplane.redis.wire import RespConnection
from roomcast.history import new_epoch
from roomcast.log import event as log_event

_MISSING: Any = object()
_SEEN_MAX = 100_000  # rooms whose highest offset a node remembers (oldest forgotten first)


@dataclass(slots=True, eq=False)
class WatchedRoom:
    """A room this node watches: its channel, and the last offset delivered here."""

    channel: bytes
    epoch: bytes | None = None
    last: int | None = None
    retired: bytes | None = None  # the epoch before `epoch`: its late messages are dropped
    subscribed: trio.Event = field(default_factory=trio.Event)


class Reader(Commands):
    """Pub/sub delivery, gap filling from history, and catch-up after a reconnect."""

    _watched: dict[str, WatchedRoom]
    _channels: dict[bytes, str]
    _unsubscribing: dict[bytes, int]  # SUNSUBSCRIBEs sent and not yet confirmed, per channel
    _events: dict[bytes, str | None]
    _revoked_seen: dict[str, float]
    _room_ttl_ms: int
    _httl_ms: int
    received: int
    duplicates: int
    filled: int
    lost: int
    resets: int
    fenced: int
    _seen: dict[str, tuple[bytes, int]]

    async def _read(self, sink: Sink, conn: RespConnection) -> None:
        control = CONTROL_CHANNEL.encode()
        channels = self._channels
        while True:
            for push in await conn.next_pushes():
                kind = push[0]
                if kind != b"smessage" and kind != b"message":
                    if kind == b"sunsubscribe":
                        self._unsubscribed(cast(bytes, push[1]))
                    continue  # other subscribe / unsubscribe confirmations
                channel = cast(bytes, push[1])
                data = cast(bytes, push[2])
                if channel == control:
                    self._on_control(sink, data)
                    continue
                room = channels.get(channel)
                if room is None:
                    continue  # unwatched while the message was on its way
                st = self._watched[room]
                if data[:1] == b"m":
                    self.received += 1
                    nl = data.index(b"\n")
                    offset_raw, epoch, event_raw = data[1:nl].split(b" ", 2)
                    offset = int(offset_raw)
                    event = self._events.get(event_raw, _MISSING)
                    if event is _MISSING:
                        event = self._event(event_raw)
                    if st.last is not None and (st.epoch != epoch or offset > st.last + 1):
                        if epoch == st.retired:
                            self.duplicates += 1  # published before the stream was replaced
                            continue
                        await self._sync(sink, room, st, epoch, offset - 1)
                    self._accept(sink, room, st, offset, epoch, data[nl + 1:], event)
                elif data[:1] == b"p":
                    self._on_presence(sink, room, data)

    def _unsubscribed(self, channel: bytes) -> None:
        """A SUNSUBSCRIBE confirmation: ours (unwatch), or the Cluster's when the channel's
        slot moved to another primary (failover, resharding): then the session starts over,
        subscribing where the slot lives now and catching up."""
        pending = self._unsubscribing.get(channel, 0)
        if pending > 1:
            self._unsubscribing[channel] = pending - 1
        elif pending == 1:
            del self._unsubscribing[channel]
        elif channel in self._channels:
            self._end_session("the cluster moved a watched room's slot")

    def _event(self, raw: bytes) -> str | None:
        value: str | None = msgspec.json.decode(raw)
        if len(self._events) > 4096:
            self._events.clear()
        self._events[raw] = value
        return value

    def _accept(self, sink: Sink, room: str, st: WatchedRoom, offset: int, epoch: bytes,
                payload: bytes, event: str | None) -> None:
        """Deliver one message unless this node already has (each offset once, in order)."""
        if st.last is not None and st.epoch == epoch and offset <= st.last:
            self.duplicates += 1
            return
        st.epoch = epoch
        st.last = offset
        sink.deliver(room, offset, payload, event)

    async def _sync(self, sink: Sink, room: str, st: WatchedRoom, epoch: bytes,
                    upto: int) -> None:
        """Bring delivery in `room` up to offset `upto` of stream `epoch` from history: the
        messages pub/sub did not bring, after a reset (§17) when the stream is not the one
        this node was delivering. Redis errors end the session (the catch-up after the
        reconnect tries again), so nothing is skipped in silence."""
        if st.last is None or (st.epoch == epoch and upto <= st.last):
            return
        after = st.last if st.epoch == epoch else 0  # a new stream is read from its start
        entries: list[tuple[int, bytes, str | None]] = []
        if upto > after:
            reply = cast(list[Any], await self._exec(HISTORY, room_keys(room), [
                new_epoch(), self._room_ttl_ms, after, upto - after, self._httl_ms]))
            if bytes(reply[1]) == epoch:  # else that stream is gone too: nothing is held
                for raw in reply[2:]:
                    payload = strip_time(raw)
                    view = entry_decoder.decode(payload)
                    if after < view.offset <= upto:
                        entries.append((view.offset, payload, view.event))
        # Decided after the read: another sync may have moved this room on meanwhile.
        last = st.last
        if st.epoch != epoch:
            last = entries[0][0] - 1 if entries else upto
            self._reset(sink, room, st, epoch, last, (1, last) if last > 0 else None)
        for offset, payload, event in entries:
            if offset <= last:
                continue
            if offset > last + 1:  # held no longer: history was trimmed or expired
                self._reset(sink, room, st, epoch, offset - 1, (last + 1, offset - 1))
            self.filled += 1
            self._accept(sink, room, st, offset, epoch, payload, event)
            last = offset
        if last < upto:
            self._reset(sink, room, st, epoch, upto, (last + 1, upto))

    def _reset(self, sink: Sink, room: str, st: WatchedRoom, epoch: bytes, offset: int,
               missed: tuple[int, int] | None) -> None:
        """Tell the room's subscribers that delivery goes on after `offset` of stream
        `epoch`, and what they will never get of it (`missed`); counted and logged once."""
        old = st.epoch
        if old != epoch:
            st.retired = old
        st.epoch, st.last = epoch, offset
        self.resets += 1
        if missed is not None:
            self.lost += missed[1] - missed[0] + 1
        log_event("stream reset for this node's subscribers" if old != epoch
                  else "messages lost for this node: no longer in history", 30, room=room,
                  old_epoch=None if old is None else old.decode(errors="replace"),
                  epoch=epoch.decode(errors="replace"), offset=offset,
                  missed=None if missed is None else f"{missed[0]}-{missed[1]}")
        sink.reset(room, epoch.decode(errors="replace"), offset, missed)

    def _saw(self, room: str, epoch: bytes, offset: int) -> None:
        """Remember the highest offset heard of in the room's stream `epoch`."""
        seen = self._seen.get(room)
        if seen is not None and seen[0] == epoch and seen[1] >= offset:
            return
        self._seen[room] = (epoch, offset)
        if len(self._seen) > _SEEN_MAX:
            for old in list(self._seen)[:_SEEN_MAX // 2]:
                del self._seen[old]

    def _floor(self, room: str) -> tuple[bytes, int]:
        """The (epoch, offset) Redis must not be behind of in `room` (b"", 0: none known)."""
        seen = self._seen.get(room)
        st = self._watched.get(room)
        if (st is not None and st.epoch is not None and st.last is not None
                and (seen is None or seen[0] != st.epoch or seen[1] < st.last)):
            return st.epoch, st.last
        return seen if seen is not None else (b"", 0)

    def _floors(self) -> list[tuple[str, bytes, int]]:
        """Every room with a known floor (watched rooms, then the others heard of)."""
        rooms = set(self._seen) | {r for r, st in self._watched.items() if st.last is not None}
        return [(room, *self._floor(room)) for room in rooms]

    async def _fence(self, floors: list[tuple[str, bytes, int]]) -> None:
        """End the stream of every room whose Redis counter is behind what this node saw
        under the same epoch (acknowledged writes were lost): a new epoch, offset 0, empty
        history; the catch-up then resets the room's subscribers. Runs before the node is
        ready, so this node never assigns an offset twice in one epoch."""
        for chunk in self._groups(floors, lambda floor: room_slot_key(floor[0])):
            keys = [k for room, _, _ in chunk for k in room_keys(room)]
            args: list[Any] = [new_epoch(), self._room_ttl_ms]
            for _, epoch, offset in chunk:
                args += [epoch, offset]
            reply = cast(list[Any], await self._exec(FENCE, keys, args))
            for j, (room, epoch, offset) in enumerate(chunk):
                now, ended = int(reply[3 * j]), int(reply[3 * j + 2])
                if not ended:
                    continue
                self.fenced += 1
                new = bytes(reply[3 * j + 1])
                self._seen[room] = (new, now)
                log_event("redis was behind this node: the room's stream ends here", 30,
                          room=room, epoch=epoch.decode(errors="replace"), seen=offset,
                          redis_offset=now, new_epoch=new.decode(errors="replace"))

    async def _catch_up(self, sink: Sink, rooms: list[tuple[str, WatchedRoom]]) -> None:
        """After a reconnect: deliver what was published while pub/sub was down, after a
        reset where the room's stream was replaced (epochs are compared first)."""
        known = [(room, st) for room, st in rooms if st.last is not None]
        for chunk in self._groups(known, lambda item: room_slot_key(item[0])):
            keys = [k for room, _ in chunk for k in room_keys(room)[:2]]
            reply = cast(list[Any], await self._exec(OFFSETS, keys, []))
            for j, (room, st) in enumerate(chunk):
                offset, epoch = int(reply[2 * j]), bytes(reply[2 * j + 1])
                if offset < 0:
                    # The stream is gone (Redis lost it) and no new one exists yet. The old
                    # epoch stays remembered: the first message of the new stream differs
                    # from it, and takes the reset path in _read.
                    continue
                if st.last is not None and (epoch != st.epoch or offset > st.last):
                    await self._sync(sink, room, st, epoch, offset)

    def _on_presence(self, sink: Sink, room: str, data: bytes) -> None:
        _, info_raw, user = data.split(b"\n", 2)
        joined = data[1:2] == b"1"
        info: dict[str, Any] | None = None
        if joined:
            try:
                decoded = msgspec.json.decode(info_raw) if info_raw else {}
            except msgspec.DecodeError:
                decoded = {}
            info = decoded if isinstance(decoded, dict) else {}
        sink.presence_changed(room, user.decode(errors="replace"), info, joined)

    def _on_control(self, sink: Sink, data: bytes) -> None:
        kind, _, body = data.partition(b"\n")
        try:
            payload = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return
        if not isinstance(payload, dict):
            return
        if kind == b"revoke":
            jti = str(payload.get("jti"))
            forget = payload.get("expires_at")
            self._revoked_seen[jti] = float(forget) if forget is not None else math.inf
        sink.control(kind.decode(errors="replace"), payload)

    async def _sync_revocations(self, sink: Sink) -> None:
        """Apply revocations made while this node was away (or before it started)."""
        now = time.time()
        reply = cast(list[Any], await self._exec(REVOCATIONS, [REVOKED], [now]))
        for i in range(0, len(reply), 2):
            jti, forget_at = bytes(reply[i]).decode(errors="replace"), float(reply[i + 1])
            if self._revoked_seen.get(jti, -math.inf) >= forget_at:
                continue
            self._revoked_seen[jti] = forget_at
            sink.control("revoke", {"jti": jti, "expires_at": forget_at})
        if len(self._revoked_seen) > 200_000:
            self._revoked_seen = {j: t for j, t in self._revoked_seen.items() if t > now}
