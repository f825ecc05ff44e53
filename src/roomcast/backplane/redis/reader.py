"""The receiving side of the Redis backplane: one pub/sub connection carries every watched
room's messages, presence events and control events to the node's Sink.

Per node, the reader remembers the last offset it delivered in each room; a message that
skips ahead (the pub/sub connection dropped while Redis stayed up) first gets the missing
ones from history, and one it has already delivered is dropped, so local subscribers see
each offset once and in order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import trio
from coredis.connection import BaseConnection

from roomcast.backplane.base import BackplaneUnavailable, Sink
from roomcast.backplane.redis.commands import Commands
from roomcast.backplane.redis.keys import (
    CHUNK,
    CONTROL_CHANNEL,
    REVOKED,
    entry_decoder,
    room_keys,
    strip_time,
)
from roomcast.backplane.redis.scripts import HISTORY, OFFSETS, REVOCATIONS
from roomcast.history import new_epoch
from roomcast.log import event as log_event

_MISSING: Any = object()


@dataclass(slots=True, eq=False)
class WatchedRoom:
    """A room this node watches: its channel, and the last offset delivered here."""

    channel: bytes
    epoch: bytes | None = None
    last: int | None = None
    subscribed: trio.Event = field(default_factory=trio.Event)


class Reader(Commands):
    """Pub/sub delivery, gap filling from history, and catch-up after a reconnect."""

    _watched: dict[str, WatchedRoom]
    _channels: dict[bytes, str]
    _events: dict[bytes, str | None]
    _revoked_seen: dict[str, float]
    _room_ttl_ms: int
    _httl_ms: int
    received: int
    duplicates: int
    filled: int
    lost: int

    async def _read(self, sink: Sink, conn: BaseConnection) -> None:
        control = CONTROL_CHANNEL.encode()
        channels = self._channels
        async for push in conn.push_messages:
            if push[0] != b"message":
                continue  # subscribe / unsubscribe confirmations
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
                if st.last is not None and st.epoch == epoch and offset > st.last + 1:
                    await self._fill(sink, room, st, epoch, offset - 1)
                self._accept(sink, room, st, offset, epoch, data[nl + 1:], event)
            elif data[:1] == b"p":
                self._on_presence(sink, room, data)

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

    async def _fill(self, sink: Sink, room: str, st: WatchedRoom, epoch: bytes,
                    upto: int) -> None:
        """Deliver, from history, the messages after st.last up to `upto` that pub/sub
        did not bring (published while this node's pub/sub connection was down)."""
        after = st.last
        if after is None or upto <= after:
            return
        try:
            got = await self._run(HISTORY, room_keys(room), [
                new_epoch(), self._room_ttl_ms, after, upto - after, self._httl_ms])
        except BackplaneUnavailable as exc:
            log_event("could not fill a gap from history", 30, room=room, error=str(exc))
            return
        reply = cast(list[Any], got)
        if bytes(reply[1]) != epoch:
            return
        expected = after + 1
        for raw in reply[2:]:
            payload = strip_time(raw)
            view = entry_decoder.decode(payload)
            if view.offset > upto:
                break
            if view.offset > expected:
                self.lost += view.offset - expected
            expected = view.offset + 1
            if st.epoch == epoch and st.last is not None and view.offset > st.last:
                self.filled += 1
            self._accept(sink, room, st, view.offset, epoch, payload, view.event)
        if expected <= upto:
            self.lost += upto - expected + 1
            log_event("messages lost for this node: no longer in history", 30, room=room,
                      first=expected, last=upto)

    async def _catch_up(self, sink: Sink, rooms: list[tuple[str, WatchedRoom]]) -> None:
        """After a reconnect: deliver what was published while pub/sub was down."""
        known = [(room, st) for room, st in rooms if st.last is not None]
        for i in range(0, len(known), CHUNK):
            chunk = known[i:i + CHUNK]
            keys = [k for room, _ in chunk for k in room_keys(room)[:2]]
            reply = cast(list[Any], await self._exec(OFFSETS, keys, []))
            for j, (room, st) in enumerate(chunk):
                offset, epoch = int(reply[2 * j]), bytes(reply[2 * j + 1])
                if st.last is not None and epoch == st.epoch and offset > st.last:
                    await self._fill(sink, room, st, epoch, offset)

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
