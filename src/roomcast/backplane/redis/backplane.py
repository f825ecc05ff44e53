"""RedisBackplane: several roomcast processes act as one (protocol §9).

Redis holds every room's epoch, offset, history and idempotency keys, and carries each
message to every node over sharded pub/sub. One Lua script per publish checks the
idempotency key, assigns the next offset, keeps the message in history and SPUBLISHes it,
atomically, so offsets stay contiguous whichever node publishes. A node subscribes in Redis
only to the rooms it has local subscribers in; its own publishes reach it through pub/sub
like any other node's, so every node delivers each message exactly once, along one path.

The Redis is one server (`redis://`), the master a set of sentinels names
(`redis+sentinel://`, sentinel.py) or a Redis Cluster (`redis+cluster://`, cluster.py): a
session holds a command and a pub/sub connection to each primary, and every script runs
on the primary of its keys' hash slot.
"""

from __future__ import annotations

import contextlib
import math
import random
import secrets
import time
from typing import Any, cast

import coredis
import msgspec
import trio
from coredis.connection import TCPLocation
from coredis.exceptions import ConnectionError as RedisConnectionError

from roomcast.backplane.base import (
    Backplane,
    BackplaneUnavailable,
    HistoryPage,
    PublishResult,
    RoomPosition,
    Sink,
)
from roomcast.backplane.redis.cluster import SCHEME as CLUSTER_SCHEME
from roomcast.backplane.redis.cluster import ClusterURL, slot_owners
from roomcast.backplane.redis.cluster import parse as parse_cluster_url
from roomcast.backplane.redis.commands import FAILURES, describe
from roomcast.backplane.redis.keys import (
    CONTROL_CHANNEL,
    NODES,
    NODESTATS,
    REVOKED,
    entry_decoder,
    node_index,
    room_channel,
    room_keys,
    room_slot_key,
    strip_time,
)
from roomcast.backplane.redis.presence import Presence
from roomcast.backplane.redis.reader import Reader, WatchedRoom
from roomcast.backplane.redis.scripts import (
    CLUSTER,
    CONTROL,
    HISTORY,
    POSITION,
    PUBLISH,
    PUBLISH_MANY,
    REVOKE,
    Script,
)
from roomcast.backplane.redis.sentinel import SCHEME as SENTINEL_SCHEME
from roomcast.backplane.redis.sentinel import SentinelURL, ask_on, follow, locate
from roomcast.backplane.redis.sentinel import parse as parse_sentinel_url
from roomcast.backplane.redis.wire import RespConnection
from roomcast.history import new_epoch
from roomcast.log import event as log_event
from roomcast.protocol import MessageTemplate
from roomcast.settings import Settings, SettingsError

_REVOKE_KEEP = 86400.0  # seconds a revocation without expires_at is kept (as RevocationList)
_json_encode = msgspec.json.encode


def _read_url(url: str, timeout: float) -> Any:
    """The connection pool coredis makes of the URL, only to read it (host, port, db,
    credentials, TLS): commands and pub/sub go over connections of our own (wire.py)."""
    try:
        pool = coredis.ConnectionPool.from_url(url, connect_timeout=timeout,
                                               stream_timeout=timeout)
    except ValueError as exc:
        raise SettingsError(
            f"backplane: cannot use {url!r} ({exc}); write it as redis://HOST:PORT/DB"
        ) from exc
    if pool.location is None:
        raise SettingsError(f"backplane: no host in {url!r}; write it as redis://HOST:PORT/DB")
    return pool
class RedisBackplane(Reader, Presence, Backplane):
    """Offsets, history, presence and control in Redis, shared by every node (§9)."""

    name = "redis"
    # Reconnection: the first retry after min_backoff, doubling up to max_backoff, each
    # delay drawn uniformly from [delay/2, delay] so nodes do not reconnect in step.
    min_backoff = 0.05
    max_backoff = 2.0
    keepalive_interval = 1.0  # seconds between PINGs on each connection

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = f"{settings.node}#{secrets.token_hex(3)}"
        client_name = "".join(c if c.isalnum() or c in "-_.:#" else "_" for c in self.instance)
        self._client_name = client_name
        url = settings.backplane
        self._sentinel: SentinelURL | None = None
        self._cluster: ClusterURL | None = None
        if url.startswith(SENTINEL_SCHEME):
            self._sentinel = parse_sentinel_url(url)
            url = self._sentinel.master_url(*self._sentinel.sentinels[0])  # replaced later
        elif url.startswith(CLUSTER_SCHEME):
            self._cluster = parse_cluster_url(url)
            url = self._cluster.node_url(*self._cluster.nodes[0])
        pool = _read_url(url, self.command_timeout)
        self.where = str(pool.location)
        if self._sentinel is not None:
            self.where = f"master {self._sentinel.master!r} (not located yet)"
        elif self._cluster is not None:
            self.where = "cluster " + ",".join(f"{h}:{p}" for h, p in self._cluster.nodes)
        self._location = pool.location
        self._conn_kwargs = dict(pool.connection_kwargs)  # RespConnection takes its own

        s = settings
        self._size = s.history_size
        self._httl_ms = int(s.history_ttl * 1000)
        self._window_ms = max(int(s.idempotency_window * 1000), 1)
        self._room_ttl_ms = max(self._httl_ms, self._window_ms, 1000)
        self._presence_ttl = s.presence_ttl if s.presence_ttl > 0 else 60.0
        self._presence_ttl_ms = max(int(self._presence_ttl * 1000), 100)
        self._index = node_index(self.instance)

        self._ready = False
        self._sink: Sink | None = None  # set by run(); position() may announce a reset
        self._sub: RespConnection | None = None  # pub/sub (Cluster: the node-wide slot's)
        self._cmd: RespConnection | None = None  # commands, pipelined (as _sub)
        self._subs: list[RespConnection] = []  # one per primary (one off Cluster)
        self._cmds: list[RespConnection] = []
        self._slot_subs: list[RespConnection] | None = None  # Cluster: per hash slot
        self._slot_cmds: list[RespConnection] | None = None
        self._slot_places: list[tuple[str, int]] | None = None  # Cluster: the last map
        self._slot_cache: dict[str, int] = {}
        self._watched: dict[str, WatchedRoom] = {}
        self._channels: dict[bytes, str] = {}
        self._unsubscribing: dict[bytes, int] = {}
        self._events: dict[bytes, str | None] = {}
        self._mine: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._users: dict[str, int] = {}  # this node's live connections per user (§13)
        self._users_dirty: set[str] = set()
        self._users_kick = trio.Event()
        self._inflight: set[tuple[str, str]] = set()
        self._revoked_seen: dict[str, float] = {}
        self._seen: dict[str, tuple[bytes, int]] = {}  # room -> highest (epoch, offset) heard
        self._kick = trio.Event()
        self._wake = trio.Event()  # set when the sentinels announce a new master
        self._first_attempt = trio.Event()
        self._registered = False  # the heartbeat has put this node in rc:{rc}:nodes
        self.down_reason = ""  # why Redis is unusable, for errors and logs
        # Counters, shown in stats().
        self.received = 0
        self.duplicates = 0
        self.filled = 0
        self.lost = 0  # messages this node knows it could not deliver (announced)
        self.resets = 0  # sink.reset calls: streams replaced, or gaps history could not fill
        self.reconnects = 0
        self.sessions = 0  # times the node became ready
        self.fenced = 0  # streams ended because Redis was behind what this node saw
        self.failovers = 0  # sessions on another master than the one before (Sentinel)

    # ------------------------------------------------------------ lifecycle
    @property
    def ready(self) -> bool:
        return self._ready

    async def run(
        self, sink: Sink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep a pub/sub connection (reconnecting with jittered backoff) and the node's
        heartbeat; started once the first connection attempt has succeeded or failed."""
        self._sink = sink
        async with trio.open_nursery() as nursery:
            if self._sentinel is not None:
                nursery.start_soon(follow, self._sentinel, self.command_timeout,
                                   self._master_switched)
            nursery.start_soon(self._subscriber, sink)
            with trio.move_on_after(2 * self.command_timeout + 1):
                await self._first_attempt.wait()
            nursery.start_soon(self._housekeeping, sink)
            nursery.start_soon(self._user_pusher)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await self._leave()

    async def _subscriber(self, sink: Sink) -> None:
        """Run sessions one after another, with jittered exponential backoff between
        failed attempts; logs when Redis goes away, then every 30 s while it stays away."""
        backoff = self.min_backoff
        logged_at = -math.inf
        while True:
            sessions = self.sessions
            self.down_reason = ""  # set by whatever ends this attempt first
            try:
                await self._session(sink)
            except FAILURES as exc:
                self.down_reason = self.down_reason or describe(exc)  # the first cause
            except Exception as exc:  # a bug here must not take the node down: log, retry
                self.down_reason = describe(exc)
                log_event("redis backplane failed; reconnecting", 40, exc_info=True,
                          redis=self.where)
            finally:
                self._ready = False
                self._sub = self._cmd = None
                self._first_attempt.set()
            now = trio.current_time()
            if self.sessions != sessions:  # it was up: start over from the shortest delay
                backoff = self.min_backoff
                logged_at = -math.inf
            if now - logged_at >= 30:
                logged_at = now
                log_event("redis backplane unreachable; /readyz answers 503 until it is back",
                          30, redis=self.where, error=self.down_reason)
            with trio.move_on_after(random.uniform(backoff / 2, backoff)):
                await self._wake.wait()  # the sentinels named a new master: go now
            self._wake = trio.Event()
            backoff = min(backoff * 2, self.max_backoff)
            self.reconnects += 1

    def _resp_connection(self, role: str, location: Any = None) -> RespConnection:
        """A new (not yet running) connection to the configured Redis (or `location`)."""
        return RespConnection(location or self._location, **self._conn_kwargs,
                              client_name=f"roomcast-{role}:{self._client_name}")

    async def _session(self, sink: Sink) -> None:
        """One life of the connections (pub/sub and commands, to each primary): subscribe
        to every watched room and the control channel, catch up on what was missed, then
        deliver until any connection fails."""
        owner: list[int] | None = None
        if self._sentinel is not None:
            await self._locate(self._sentinel)
            places = [(self._location.host, self._location.port)]
        elif self._cluster is not None:
            places, owner = await self._map(self._cluster)
        else:
            places = [(self._location.host, self._location.port)]
        pairs = [(self._resp_connection("sub", TCPLocation(*place)),
                  self._resp_connection("cmd", TCPLocation(*place))) for place in places]
        failures: list[BaseException] = []
        async with trio.open_nursery() as nursery:
            try:
                for sub, cmd in pairs:
                    await nursery.start(self._lifeline, sub, nursery.cancel_scope)
                    await nursery.start(self._lifeline, cmd, nursery.cancel_scope)
                if self._sentinel is not None:
                    await self._check_master(pairs[0][1])
                self._subs = [sub for sub, _ in pairs]
                self._cmds = [cmd for _, cmd in pairs]
                home = 0
                if owner is not None:
                    self._slot_subs = [self._subs[i] for i in owner]
                    self._slot_cmds = [self._cmds[i] for i in owner]
                    home = owner[self._slot(NODES)]
                self._sub, self._cmd = pairs[home]
                await self._resume(sink)
                for conn in self._subs + self._cmds:
                    nursery.start_soon(self._keepalive, conn)
                for sub in self._subs:
                    nursery.start_soon(self._reader, sink, sub, nursery.cancel_scope, failures)
                await trio.sleep_forever()
            except Exception as exc:  # raised below, outside the nursery's exception group
                failures.append(exc)
            finally:
                self._ready = False
                self._sub = self._cmd = None
                self._slot_subs = self._slot_cmds = None
                self._subs, self._cmds = [], []
                self._unsubscribing.clear()
                for sub, cmd in pairs:
                    sub.invalidate()
                    cmd.invalidate()
                nursery.cancel_scope.cancel()
        if failures:
            raise failures[0]
        raise RedisConnectionError(self.down_reason or "the connection to Redis closed")

    async def _reader(self, sink: Sink, conn: RespConnection, session: trio.CancelScope,
                      failures: list[BaseException]) -> None:
        """Deliver what one pub/sub connection brings; when it ends, so does the session
        (a failure is kept for the session to raise, so it is logged as itself)."""
        try:
            await self._read(sink, conn)
        except Exception as exc:
            failures.append(exc)
        finally:
            if not session.cancel_called:
                self.down_reason = self.down_reason or "the connection to Redis closed"
                session.cancel()

    async def _map(self, url: ClusterURL) -> tuple[list[tuple[str, int]], list[int]]:
        """The cluster's primaries and each slot's, as the first node that has a whole map
        says (the primaries of the last map are asked first, then the URL's nodes)."""
        seeds = list(dict.fromkeys([*(self._slot_places or []), *url.nodes]))
        failures = []
        for place in seeds:
            try:
                conn = self._resp_connection("map", TCPLocation(*place))
                reply = await ask_on(conn, [b"CLUSTER", b"SLOTS"], self.command_timeout)
                primaries, owner = slot_owners(reply, place[0])
            except (*FAILURES, ValueError) as exc:
                failures.append(f"{place[0]}:{place[1]}: {describe(exc)}")
                continue
            before = self._slot_places
            self._slot_places = [primaries[i] for i in owner]
            self.where = (f"cluster of {len(primaries)} primaries ("
                          + ",".join(f"{h}:{p}" for h, p in primaries) + ")")
            if before is not None and before != self._slot_places and self.sessions:
                self.failovers += 1
                log_event("redis cluster slots moved", 30, redis=self.where)
            return primaries, owner
        raise RedisConnectionError("no cluster node gave a whole slot map ("
                                   + "; ".join(failures) + ")")

    def _place_for(self, key: str) -> tuple[str, int]:
        """Where `key`'s slot lived in the last session (for connections of their own)."""
        places = self._slot_places
        if places is None:
            return self._location.host, self._location.port
        return places[self._slot(key)]

    def _sub_for(self, room: str) -> RespConnection | None:
        """The pub/sub connection of the primary that owns the room's slot."""
        slots = self._slot_subs
        return self._sub if slots is None else slots[self._slot(room_slot_key(room))]

    async def _locate(self, url: SentinelURL) -> None:
        """Ask the sentinels where the master is now; this session connects there."""
        host, port = await locate(url, self.command_timeout)
        location = TCPLocation(host, port)
        if location != self._location and self.sessions:
            self.failovers += 1
            log_event("redis master moved", 30, master=url.master,
                      old=str(self._location), new=str(location))
        self._location = location
        self.where = f"{location} (master {url.master!r})"

    def _master_switched(self) -> None:
        """A sentinel announced a new master: leave the old one, reconnect at once."""
        self._wake.set()
        if self._cmd is not None:
            self.down_reason = "the sentinels named a new master"
            self._cmd.invalidate()

    async def _check_master(self, conn: RespConnection) -> None:
        """Fail the session unless the server is a master (a sentinel may name a master
        that has just been demoted, and a demoted master answers reads)."""
        with trio.fail_after(self.command_timeout):
            reply = await conn.create_request(b"ROLE")
        role = bytes(cast(list[Any], reply)[0]).decode(errors="replace")
        if role != "master":
            self.down_reason = f"{self.where} is a {role} now; asking the sentinels again"
            raise RedisConnectionError(self.down_reason)

    async def _lifeline(self, conn: RespConnection, session: trio.CancelScope, *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run a connection; when it ends, so does the session."""
        await conn.run(task_status=task_status)
        if not session.cancel_called:
            self.down_reason = self.down_reason or "the connection to Redis closed"
            session.cancel()

    async def _resume(self, sink: Sink) -> None:
        """Subscribe to every watched room and the control channel, deliver what was
        missed while away, apply revocations made meanwhile, then become ready."""
        rooms = list(self._watched.items())
        assert self._sub is not None
        self._sub.send_command(b"SUBSCRIBE", CONTROL_CHANNEL.encode())
        for group in self._groups(rooms, lambda item: room_slot_key(item[0])):
            conn = self._sub_for(group[0][0])
            assert conn is not None
            conn.send_command(b"SSUBSCRIBE", *[st.channel for _, st in group])
        for conn in self._subs:
            await self._ping(conn)
        for _, st in rooms:
            st.subscribed.set()
        await self._fence(self._floors())
        await self._catch_up(sink, rooms)
        await self._sync_revocations(sink)
        sink.resumed()  # after the catch-up: offsets may start over from here on
        self._ready = True
        self.sessions += 1
        self.down_reason = ""
        self._first_attempt.set()
        self._kick.set()
        if self.reconnects:
            log_event("redis backplane connected", redis=self.where, rooms=len(self._watched))

    async def _ping(self, conn: RespConnection) -> None:
        with trio.fail_after(self.command_timeout):
            await conn.create_request(b"PING")

    async def _keepalive(self, conn: RespConnection) -> None:
        """Notice a Redis that stopped answering (not only one that closed the socket)."""
        while True:
            await trio.sleep(self.keepalive_interval)
            try:
                if self._sentinel is not None and conn is self._cmd:
                    await self._check_master(conn)  # a demoted master ends the session
                else:
                    await self._ping(conn)
            except FAILURES as exc:
                self.down_reason = self.down_reason or f"no answer to PING ({describe(exc)})"
                conn.invalidate()
                return

    async def _leave(self) -> None:
        """On shutdown: take this node's presence out now rather than after presence_ttl.
        Runs shielded while everything else is cancelled, so on connections of its own."""
        if not self._registered:
            return
        conns: dict[tuple[str, int], RespConnection] = {}
        try:
            async with trio.open_nursery() as nursery:

                async def run(script: Script, keys: list[str], args: list[Any]) -> Any:
                    place = self._place_for(keys[0] if keys else NODES)
                    conn = conns.get(place)
                    if conn is None:
                        conn = conns[place] = self._resp_connection("leave",
                                                                        TCPLocation(*place))
                        await nursery.start(conn.run)
                    return await self._eval(conn, script, keys, args)

                try:
                    await self._reap(self.instance, False, run)
                finally:
                    for conn in conns.values():
                        conn.invalidate()
        except Exception as exc:  # best effort: presence_ttl cleans up anyway
            log_event("could not remove this node's presence on shutdown", 30,
                      redis=self.where, error=describe(exc))

    async def publish(
        self, room: str, template: MessageTemplate, event: str | None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        seen_epoch, seen_offset = self._floor(room)
        try:
            reply = await self._call(PUBLISH, room_keys(room), [
                room_channel(room), template.head, template.tail, _json_encode(event),
                "" if idempotency_key is None else "=" + idempotency_key,  # "" is a key too
                new_epoch(), self._size, self._httl_ms,
                self._window_ms, self.settings.idempotency_max_keys, self._room_ttl_ms,
                seen_epoch, seen_offset,
            ])
        except BackplaneUnavailable as exc:
            if "did not answer" in str(exc):
                raise BackplaneUnavailable(
                    f"{exc}; the message may or may not have been published: retry with "
                    "the same idempotency_key") from exc
            raise
        offset, epoch = int(reply[0]), bytes(reply[1])
        self._saw(room, epoch, offset)
        return PublishResult(offset, epoch.decode(), bool(reply[2]))

    async def publish_many(
        self, room: str, messages: list[tuple[MessageTemplate, str | None, str | None]],
    ) -> list[PublishResult]:
        """Several (template, event, idempotency_key) to one room in one round trip and
        one atomic script: the new ones take consecutive offsets, whichever node publishes
        to the room meanwhile; each answers as `publish` would have."""
        if not messages:
            return []
        seen_epoch, seen_offset = self._floor(room)
        args: list[Any] = [room_channel(room), new_epoch(), self._size, self._httl_ms,
                           self._window_ms, self.settings.idempotency_max_keys,
                           self._room_ttl_ms, seen_epoch, seen_offset]
        for template, event, key in messages:
            args += [template.head, template.tail, _json_encode(event),
                     "" if key is None else "=" + key]
        try:
            reply = await self._call(PUBLISH_MANY, room_keys(room), args)
        except BackplaneUnavailable as exc:
            if "did not answer" in str(exc):
                raise BackplaneUnavailable(
                    f"{exc}; the messages may or may not have been published: retry with "
                    "the same idempotency_keys") from exc
            raise
        epoch = bytes(reply[0])
        offsets = [int(offset) for offset in reply[1::2]]
        self._saw(room, epoch, max(offsets))
        text = epoch.decode()
        return [PublishResult(offset, text, bool(dup))
                for offset, dup in zip(offsets, reply[2::2], strict=True)]

    async def position(self, room: str, since: tuple[int, str] | None = None) -> RoomPosition:
        st = self._watched.get(room)
        if st is not None and not st.subscribed.is_set() and self._ready:
            with trio.move_on_after(self.command_timeout):
                await st.subscribed.wait()  # positions are read after the subscription
        args: list[Any] = [new_epoch(), self._room_ttl_ms, "", "", self._httl_ms]
        if since is not None:
            args[2], args[3] = since[0], since[1]
        reply = cast(list[Any], await self._call(POSITION, room_keys(room), args))
        offset, epoch = int(reply[0]), bytes(reply[1])
        self._saw(room, epoch, offset)
        st = self._watched.get(room)
        if st is not None and st.last is None:
            st.epoch, st.last = epoch, offset  # messages up to here reach nobody new
        elif st is not None and st.epoch != epoch and self._sink is not None:
            # The stream was replaced before this node heard of it: its subscribers get the
            # reset now (the new one's reply already names the new epoch).
            with contextlib.suppress(*FAILURES):  # else the reader or catch-up does it
                await self._sync(self._sink, room, st, epoch, offset)
        if since is None:
            return RoomPosition(offset, epoch.decode())
        recovered = bool(reply[2])
        missed = (int(reply[3]), int(reply[4])) if int(reply[3]) else None
        messages = []
        for raw in reply[5:]:
            payload = strip_time(raw)
            messages.append((entry_decoder.decode(payload).offset, payload))
        return RoomPosition(offset, epoch.decode(), recovered, messages, missed)

    async def history(self, room: str, since: int | None, limit: int) -> HistoryPage:
        reply = cast(list[Any], await self._call(HISTORY, room_keys(room), [
            new_epoch(), self._room_ttl_ms, "" if since is None else since, limit,
            self._httl_ms]))
        return HistoryPage(int(reply[0]), bytes(reply[1]).decode(),
                           [strip_time(raw) for raw in reply[2:]])

    async def watch(self, room: str) -> None:
        """Subscribe to the room's channel; returns once Redis has confirmed it (or at once
        when disconnected: the next connection subscribes to every watched room)."""
        if room in self._watched:
            return
        st = self._watched[room] = WatchedRoom(room_channel(room))
        self._channels[st.channel] = room
        conn = self._sub_for(room)
        if conn is None:
            return
        try:
            conn.send_command(b"SSUBSCRIBE", st.channel)
            await self._ping(conn)
        except FAILURES:
            return
        st.subscribed.set()

    async def unwatch(self, room: str) -> None:
        st = self._watched.pop(room, None)
        if st is None:
            return
        if st.epoch is not None and st.last is not None:
            self._saw(room, st.epoch, st.last)  # still a floor for later publishes (§17)
        self._channels.pop(st.channel, None)
        conn = self._sub_for(room)
        if conn is not None:
            with contextlib.suppress(*FAILURES):
                conn.send_command(b"SUNSUBSCRIBE", st.channel)
                self._unsubscribing[st.channel] = self._unsubscribing.get(st.channel, 0) + 1

    def _watched_rooms(self) -> list[str]:
        return list(self._watched)

    # ------------------------------------------------------------ control and stats
    async def send_control(self, kind: str, payload: dict[str, Any]) -> None:
        message = kind.encode() + b"\n" + _json_encode(payload)
        if kind == "revoke":
            now = time.time()
            expires = payload.get("expires_at")
            forget_at = float(expires) if expires is not None else now + _REVOKE_KEEP
            await self._call(REVOKE, [REVOKED], [
                CONTROL_CHANNEL, message, str(payload["jti"]), forget_at, now])
        else:
            await self._call(CONTROL, [], [CONTROL_CHANNEL, message])

    async def stats(self) -> dict[str, Any]:
        """Cluster-wide: the live nodes (from their heartbeats) and their connections as
        of each one's last heartbeat; and this node's backplane counters."""
        reply = cast(list[Any], await self._call(
            CLUSTER, [NODES, NODESTATS], []))
        nodes = [msgspec.json.decode(raw) for raw in reply]
        return {
            "nodes": len(nodes),
            "node_names": sorted(str(n.get("node")) for n in nodes),
            "connections": sum(int(n.get("connections", 0)) for n in nodes),
            "instance": self.instance,
            "watched_rooms": len(self._watched),
            "received": self.received,
            "duplicates_dropped": self.duplicates,
            "gap_filled": self.filled,
            "lost": self.lost,
            "resets": self.resets,
            "reconnects": self.reconnects,
            "fenced": self.fenced,
            "failovers": self.failovers,
            "redis": self.where,
        }


