"""The Redis backplane: several roomcast processes act as one (protocol §9).

Redis holds every room's epoch, offset, history and idempotency keys, and carries each
message to every node over pub/sub. One Lua script per publish checks the idempotency key,
assigns the next offset, keeps the message in history and PUBLISHes it, atomically, so
offsets stay contiguous whichever node publishes. A node subscribes in Redis only to the
rooms it has local subscribers in; its own publishes reach it through pub/sub like any
other node's, so every node delivers each message exactly once, along one path.

Layout (prefix `rc:`; every key expires, so dead rooms and dead nodes vanish):

    rc:{ROOM}:o   last offset (string)         rc:{ROOM}:e   epoch (string)
    rc:{ROOM}:h   history: LIST of "<ms> <payload>", newest last, contiguous offsets
    rc:{ROOM}:k   idempotency key -> offset     rc:{ROOM}:kt  idempotency key -> ms (ZSET)
    rc:{ROOM}:p   presence: "<node>\\0<user>" -> "<count>|<info json>"
    rc:{ROOM}:pu  presence: user -> connections on every node
    rc:c:ROOM     the room's pub/sub channel    rc:control    disconnect / revoke
    rc:nodes      node -> ms its heartbeat runs out (ZSET)
    rc:nodestats  node -> {"node", "connections", "users"} as of its last heartbeat
    rc:n:NODE:i   the node's presence entries, "<room>\\0<user>" (SET), for reaping
    rc:revoked    jti -> unix time the revocation can be forgotten (ZSET)

Messages on a room channel are `m<offset> <epoch> <event as JSON>\\n<payload>` (the event
rides in a small header so filters need not parse the payload) or presence events
`p1\\n<info>\\n<user>` (joined) and `p0\\n\\n<user>` (left): presence events go on the
room's channel rather than the control channel, so only nodes with subscribers in the
room hear them. Control messages are `<kind>\\n<payload JSON>` on `rc:control`.

Per node, the reader remembers the last offset it delivered in each room; a message that
skips ahead (the pub/sub connection dropped while Redis stayed up) first gets the missing
ones from history, and one it has already delivered is dropped, so local subscribers see
each offset once and in order.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, cast

import coredis
import msgspec
import trio
from coredis.connection import BaseConnection
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import NoScriptError, RedisError

from roomcast.backplane.base import (
    Backplane,
    BackplaneUnavailable,
    HistoryPage,
    PublishResult,
    RoomPosition,
    Sink,
)
from roomcast.history import new_epoch
from roomcast.log import event as log_event
from roomcast.protocol import MessageTemplate
from roomcast.settings import Settings, SettingsError

PREFIX = "rc:"
CONTROL_CHANNEL = PREFIX + "control"
_NODES = PREFIX + "nodes"
_NODESTATS = PREFIX + "nodestats"
_REVOKED = PREFIX + "revoked"
_CHUNK = 200  # rooms per batched script call or SUBSCRIBE command
_REVOKE_KEEP = 86400.0  # seconds a revocation without expires_at is kept (as RevocationList)

_FAILURES = (RedisError, TimeoutError, OSError, trio.TooSlowError)

# ---------------------------------------------------------------- Lua
_LIB = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The room's epoch and offset; a new epoch and an empty stream when either is gone.
local function open_room(new_epoch, ttl)
  local epoch = redis.call('GET', KEYS[2])
  local offset = redis.call('GET', KEYS[1])
  if epoch and offset then return epoch, tonumber(offset) end
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
  redis.call('SET', KEYS[2], new_epoch, 'PX', ttl)
  redis.call('SET', KEYS[1], 0, 'PX', ttl)
  return new_epoch, 0
end
-- Drop history entries older than httl ms (the list is oldest first).
local function prune(now, httl)
  while true do
    local first = redis.call('LINDEX', KEYS[3], 0)
    if not first then return end
    local t = tonumber(string.sub(first, 1, string.find(first, ' ', 1, true) - 1))
    if t > now - httl then return end
    redis.call('LPOP', KEYS[3])
  end
end
"""

# KEYS o e h k kt; ARGV channel head tail event idem new_epoch size httl window max_keys ttl
# (idem is "" for none, else "=" followed by the key)
_PUBLISH = _LIB + r"""
local now = now_ms()
local ttl = tonumber(ARGV[11])
local epoch, offset = open_room(ARGV[6], ttl)
local idem = ARGV[5]
local window = tonumber(ARGV[9])
if idem ~= '' then
  local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - window, 'LIMIT', 0, 100)
  if #old > 0 then
    redis.call('ZREM', KEYS[5], unpack(old))
    redis.call('HDEL', KEYS[4], unpack(old))
  end
  local seen = redis.call('HGET', KEYS[4], idem)
  if seen then
    local t = redis.call('ZSCORE', KEYS[5], idem)
    if t and now - tonumber(t) < window then return {tonumber(seen), epoch, 1} end
  end
end
offset = redis.call('INCR', KEYS[1])
local soffset = string.format('%d', offset)
local payload = ARGV[2] .. soffset .. ARGV[3]
local size = tonumber(ARGV[7])
local httl = tonumber(ARGV[8])
if size > 0 and httl > 0 then
  redis.call('RPUSH', KEYS[3], string.format('%d', now) .. ' ' .. payload)
  redis.call('LTRIM', KEYS[3], -size, -1)
  prune(now, httl)
  redis.call('PEXPIRE', KEYS[3], httl)
end
if idem ~= '' then
  redis.call('HSET', KEYS[4], idem, offset)
  redis.call('ZADD', KEYS[5], now, idem)
  local extra = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[10])
  if extra > 0 then
    local gone = redis.call('ZPOPMIN', KEYS[5], extra)
    for i = 1, #gone, 2 do redis.call('HDEL', KEYS[4], gone[i]) end
  end
  redis.call('PEXPIRE', KEYS[4], window)
  redis.call('PEXPIRE', KEYS[5], window)
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PUBLISH', ARGV[1], 'm' .. soffset .. ' ' .. epoch .. ' ' .. ARGV[4] .. '\n' .. payload)
return {offset, epoch, 0}
"""

# KEYS o e h k kt; ARGV new_epoch ttl since since_epoch httl
# -> {offset, epoch} or {offset, epoch, recovered, missed_from, missed_to, entries...}
_POSITION = _LIB + r"""
local epoch, offset = open_room(ARGV[1], tonumber(ARGV[2]))
if ARGV[3] == '' then return {offset, epoch} end
local since = tonumber(ARGV[3])
if ARGV[4] ~= epoch or since > offset or since < 0 then return {offset, epoch, 0, 0, 0} end
prune(now_ms(), tonumber(ARGV[5]))
if since == offset then return {offset, epoch, 1, 0, 0} end
local n = redis.call('LLEN', KEYS[3])
if n == 0 then return {offset, epoch, 0, since + 1, offset} end
local first = offset - n + 1
local out
if since >= first - 1 then
  out = {offset, epoch, 1, 0, 0}
  for _, e in ipairs(redis.call('LRANGE', KEYS[3], since - first + 1, -1)) do out[#out + 1] = e end
else
  out = {offset, epoch, 0, since + 1, first - 1}
  for _, e in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do out[#out + 1] = e end
end
return out
"""

# KEYS o e h k kt; ARGV new_epoch ttl since limit httl -> {offset, epoch, entries...}
_HISTORY = _LIB + r"""
local epoch, offset = open_room(ARGV[1], tonumber(ARGV[2]))
local limit = tonumber(ARGV[4])
prune(now_ms(), tonumber(ARGV[5]))
local n = redis.call('LLEN', KEYS[3])
local out = {offset, epoch}
if limit <= 0 or n == 0 then return out end
local entries
if ARGV[3] == '' then
  entries = redis.call('LRANGE', KEYS[3], -limit, -1)
else
  local skip = math.max(tonumber(ARGV[3]) - (offset - n + 1) + 1, 0)
  entries = redis.call('LRANGE', KEYS[3], skip, skip + limit - 1)
end
for _, e in ipairs(entries) do out[#out + 1] = e end
return out
"""

# KEYS o1 e1 o2 e2 ... -> {offset or -1, epoch or '', ...} (read only: nothing is created)
_OFFSETS = r"""
local out = {}
for i = 1, #KEYS, 2 do
  local o = redis.call('GET', KEYS[i])
  local e = redis.call('GET', KEYS[i + 1])
  if o and e then out[#out + 1] = tonumber(o); out[#out + 1] = e
  else out[#out + 1] = -1; out[#out + 1] = '' end
end
return out
"""

# KEYS p pu idx; ARGV node user count info channel ttl member -> the user's cluster total
_PRESENCE_SET = r"""
local field = ARGV[1] .. '\0' .. ARGV[2]
local old = 0
local v = redis.call('HGET', KEYS[1], field)
if v then old = tonumber(string.sub(v, 1, string.find(v, '|', 1, true) - 1)) end
local n = tonumber(ARGV[3])
local ttl = tonumber(ARGV[6])
if n > 0 then
  redis.call('HSET', KEYS[1], field, ARGV[3] .. '|' .. ARGV[4])
  redis.call('SADD', KEYS[3], ARGV[7])
  redis.call('PEXPIRE', KEYS[3], ttl)
else
  redis.call('HDEL', KEYS[1], field)
  redis.call('SREM', KEYS[3], ARGV[7])
end
local delta = n - old
local total = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if delta ~= 0 then
  total = redis.call('HINCRBY', KEYS[2], ARGV[2], delta)
  if total <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
local before = total - delta
if before <= 0 and total > 0 then
  redis.call('PUBLISH', ARGV[5], 'p1\n' .. ARGV[4] .. '\n' .. ARGV[2])
elseif before > 0 and total <= 0 then
  redis.call('PUBLISH', ARGV[5], 'p0\n\n' .. ARGV[2])
end
return total
"""

# KEYS p nodes -> {user, connections, info, ...} over the nodes whose heartbeat is alive
_PRESENCE_GET = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local alive = {}
local users = {}
local order = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f = all[i]
  local sep = string.find(f, '\0', 1, true)
  local node = string.sub(f, 1, sep - 1)
  local ok = alive[node]
  if ok == nil then
    local s = redis.call('ZSCORE', KEYS[2], node)
    ok = (s ~= false and s ~= nil and tonumber(s) > now)
    alive[node] = ok
  end
  if ok then
    local user = string.sub(f, sep + 1)
    local v = all[i + 1]
    local bar = string.find(v, '|', 1, true)
    local c = tonumber(string.sub(v, 1, bar - 1))
    local u = users[user]
    if u then u[1] = u[1] + c
    else users[user] = {c, string.sub(v, bar + 1)}; order[#order + 1] = user end
  end
end
local out = {}
for _, user in ipairs(order) do
  out[#out + 1] = user; out[#out + 1] = users[user][1]; out[#out + 1] = users[user][2]
end
return out
"""

# KEYS nodes nodestats idx; ARGV node ttl stats -> {newly registered 0/1, dead nodes...}
_HEARTBEAT = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local added = redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], 3 * ttl)
redis.call('PEXPIRE', KEYS[2], 3 * ttl)
redis.call('PEXPIRE', KEYS[3], 3 * ttl)
local out = {added}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 16)) do
  out[#out + 1] = n
end
return out
"""

# KEYS nodes nodestats idx; ARGV node prefix only_if_dead -> 1 when the node is gone
# Removes up to 100 of a node's presence entries, publishing `left` where a user's
# cluster-wide count reaches 0; run until it returns 1.
_REAP = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '1' then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if s and tonumber(s) > now then return 1 end
end
local members = redis.call('SPOP', KEYS[3], 100)
for _, m in ipairs(members) do
  local sep = string.find(m, '\0', 1, true)
  local room = string.sub(m, 1, sep - 1)
  local user = string.sub(m, sep + 1)
  local p = ARGV[2] .. '{' .. room .. '}:p'
  local pu = ARGV[2] .. '{' .. room .. '}:pu'
  local field = ARGV[1] .. '\0' .. user
  local v = redis.call('HGET', p, field)
  if v then
    local c = tonumber(string.sub(v, 1, string.find(v, '|', 1, true) - 1))
    redis.call('HDEL', p, field)
    local total = redis.call('HINCRBY', pu, user, -c)
    if total <= 0 then
      redis.call('HDEL', pu, user)
      if c > 0 then redis.call('PUBLISH', ARGV[2] .. 'c:' .. room, 'p0\n\n' .. user) end
    end
  end
end
if redis.call('SCARD', KEYS[3]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

# ARGV prefix room_ttl presence_ttl n_watched room... ; keeps live rooms' keys from expiring
_RENEW = r"""
local n = tonumber(ARGV[4])
for i = 5, #ARGV do
  local base = ARGV[1] .. '{' .. ARGV[i] .. '}:'
  if i - 4 <= n then
    redis.call('PEXPIRE', base .. 'o', ARGV[2])
    redis.call('PEXPIRE', base .. 'e', ARGV[2])
  else
    redis.call('PEXPIRE', base .. 'p', ARGV[3])
    redis.call('PEXPIRE', base .. 'pu', ARGV[3])
  end
end
return 1
"""

# KEYS nodes nodestats -> {node stats json of every live node...}
_CLUSTER = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local alive = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
if #alive == 0 then return {} end
local out = {}
for _, s in ipairs(redis.call('HMGET', KEYS[2], unpack(alive))) do
  if s then out[#out + 1] = s end
end
return out
"""

# KEYS revoked; ARGV channel message jti forget_at(unix s) now(unix s)
_REVOKE = r"""
local old = redis.call('ZSCORE', KEYS[1], ARGV[3])
if not old or tonumber(old) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[5])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""

# KEYS revoked; ARGV now(unix s) -> {jti, forget_at, ...} still in force
_REVOCATIONS = "return redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES')"

# ARGV channel message
_CONTROL = "return redis.call('PUBLISH', ARGV[1], ARGV[2])"


class _Script:
    """A Lua script's source and SHA1, for EVALSHA with an EVAL fallback."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest().encode()


PUBLISH, POSITION, HISTORY, OFFSETS = (
    _Script(_PUBLISH), _Script(_POSITION), _Script(_HISTORY), _Script(_OFFSETS))
PRESENCE_SET, PRESENCE_GET = _Script(_PRESENCE_SET), _Script(_PRESENCE_GET)
HEARTBEAT, REAP, RENEW, CLUSTER = (
    _Script(_HEARTBEAT), _Script(_REAP), _Script(_RENEW), _Script(_CLUSTER))
REVOKE, REVOCATIONS, CONTROL = _Script(_REVOKE), _Script(_REVOCATIONS), _Script(_CONTROL)


def room_keys(room: str) -> list[str]:
    """The five keys of a room's stream, in the order every stream script takes them."""
    base = f"{PREFIX}{{{room}}}:"
    return [base + "o", base + "e", base + "h", base + "k", base + "kt"]


def room_channel(room: str) -> bytes:
    return f"{PREFIX}c:{room}".encode()


class _EntryView(msgspec.Struct):
    """The two fields of a stored message the reader needs when it fills a gap."""

    offset: int
    event: str | None = None


_entry_decoder = msgspec.json.Decoder(_EntryView)
_json_encode = msgspec.json.encode
_MISSING: Any = object()


@dataclass(slots=True, eq=False)
class _Room:
    """A room this node watches: its channel, and the last offset delivered here."""

    channel: bytes
    epoch: bytes | None = None
    last: int | None = None
    subscribed: trio.Event = field(default_factory=trio.Event)


def _strip_time(entry: bytes) -> bytes:
    """A history entry is "<ms> <payload>"; return the payload."""
    return entry[entry.index(b" ") + 1:]


class RedisBackplane(Backplane):
    """Offsets, history, presence and control in Redis, shared by every node (§9)."""

    name = "redis"
    # Reconnection: the first retry after min_backoff, doubling up to max_backoff, each
    # delay drawn uniformly from [delay/2, delay] so nodes do not reconnect in step.
    min_backoff = 0.05
    max_backoff = 2.0
    command_timeout = 3.0  # seconds to wait for any one Redis reply
    keepalive_interval = 1.0  # seconds between PINGs on each connection

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = f"{settings.node}#{secrets.token_hex(3)}"
        client_name = "".join(c if c.isalnum() or c in "-_.:#" else "_" for c in self.instance)
        self._client_name = client_name
        try:
            # Only to read the URL (host, port, db, credentials, TLS); commands go over
            # connections of our own: coredis's client path costs ~100 us of CPU per
            # command where a request on a connection costs ~25 us (benchmarks/).
            pool = coredis.ConnectionPool.from_url(
                settings.backplane, connect_timeout=self.command_timeout,
                stream_timeout=self.command_timeout,
            )
        except ValueError as exc:
            raise SettingsError(
                f"backplane: cannot use {settings.backplane!r} ({exc}); "
                "write it as redis://HOST:PORT/DB"
            ) from exc
        if pool.location is None:
            raise SettingsError(f"backplane: no host in {settings.backplane!r}; "
                                "write it as redis://HOST:PORT/DB")
        self.where = str(pool.location)
        self._location = pool.location
        self._connection_class: Any = pool.connection_class
        self._conn_kwargs = {k: v for k, v in pool.connection_kwargs.items()
                             if k != "processing_budget"}

        s = settings
        self._size = s.history_size
        self._httl_ms = int(s.history_ttl * 1000)
        self._window_ms = max(int(s.idempotency_window * 1000), 1)
        self._room_ttl_ms = max(self._httl_ms, self._window_ms, 1000)
        self._presence_ttl = s.presence_ttl if s.presence_ttl > 0 else 60.0
        self._presence_ttl_ms = max(int(self._presence_ttl * 1000), 100)
        self._index = f"{PREFIX}n:{self.instance}:i"

        self._ready = False
        self._sub: BaseConnection | None = None  # pub/sub
        self._cmd: BaseConnection | None = None  # every command, pipelined
        self._watched: dict[str, _Room] = {}
        self._channels: dict[bytes, str] = {}
        self._events: dict[bytes, str | None] = {}
        self._mine: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._inflight: set[tuple[str, str]] = set()
        self._revoked_seen: dict[str, float] = {}
        self._kick = trio.Event()
        self._first_attempt = trio.Event()
        self._registered = False  # the heartbeat has put this node in rc:nodes
        self.down_reason = ""  # why Redis is unusable, for errors and logs
        # Counters, shown in stats().
        self.received = 0
        self.duplicates = 0
        self.filled = 0
        self.lost = 0
        self.reconnects = 0
        self.sessions = 0  # times the node became ready

    # ------------------------------------------------------------ lifecycle
    @property
    def ready(self) -> bool:
        return self._ready

    async def run(
        self, sink: Sink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep a pub/sub connection (reconnecting with jittered backoff) and the node's
        heartbeat; started once the first connection attempt has succeeded or failed."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._subscriber, sink)
            with trio.move_on_after(2 * self.command_timeout + 1):
                await self._first_attempt.wait()
            nursery.start_soon(self._housekeeping, sink)
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
            except _FAILURES as exc:
                self.down_reason = self.down_reason or _describe(exc)  # the first cause
            except Exception as exc:  # a bug here must not take the node down: log, retry
                self.down_reason = _describe(exc)
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
            await trio.sleep(random.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, self.max_backoff)
            self.reconnects += 1

    def _connection(self, role: str) -> BaseConnection:
        """A new (not yet running) connection to the configured Redis."""
        kwargs = {**self._conn_kwargs, "client_name": f"roomcast-{role}:{self._client_name}"}
        conn: BaseConnection = self._connection_class(self._location, **kwargs)
        return conn

    async def _session(self, sink: Sink) -> None:
        """One life of the two connections (pub/sub, commands): subscribe to every watched
        room and the control channel, catch up on what was missed, then deliver until
        either connection fails."""
        sub, cmd = self._connection("sub"), self._connection("cmd")
        failure: BaseException | None = None
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(self._lifeline, sub, nursery.cancel_scope)
                await nursery.start(self._lifeline, cmd, nursery.cancel_scope)
                self._sub, self._cmd = sub, cmd
                await self._resume(sink, sub)
                nursery.start_soon(self._keepalive, sub)
                nursery.start_soon(self._keepalive, cmd)
                await self._read(sink, sub)
            except Exception as exc:  # raised below, outside the nursery's exception group
                failure = exc
            finally:
                self._ready = False
                self._sub = self._cmd = None
                sub.invalidate()
                cmd.invalidate()
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        raise RedisConnectionError(self.down_reason or "the connection to Redis closed")

    async def _lifeline(self, conn: BaseConnection, session: trio.CancelScope, *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run a connection; when it ends, so does the session."""
        await conn.run(task_status=task_status)
        if not session.cancel_called:
            self.down_reason = self.down_reason or "the connection to Redis closed"
            session.cancel()

    async def _resume(self, sink: Sink, conn: BaseConnection) -> None:
        """Subscribe to every watched room and the control channel, deliver what was
        missed while away, apply revocations made meanwhile, then become ready."""
        rooms = list(self._watched.items())
        channels = [CONTROL_CHANNEL.encode()] + [st.channel for _, st in rooms]
        for i in range(0, len(channels), _CHUNK):
            conn.send_command(b"SUBSCRIBE", *channels[i:i + _CHUNK])
        await self._ping(conn)
        for _, st in rooms:
            st.subscribed.set()
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

    async def _ping(self, conn: BaseConnection) -> None:
        with trio.fail_after(self.command_timeout):
            await conn.create_request(b"PING")

    async def _keepalive(self, conn: BaseConnection) -> None:
        """Notice a Redis that stopped answering (not only one that closed the socket)."""
        while True:
            await trio.sleep(self.keepalive_interval)
            try:
                await self._ping(conn)
            except _FAILURES as exc:
                self.down_reason = f"no answer to PING ({_describe(exc)})"
                conn.invalidate()
                return

    async def _leave(self) -> None:
        """On shutdown: take this node's presence out now rather than after presence_ttl.
        Runs shielded while everything else is cancelled, so on a connection of its own."""
        if not self._registered:
            return
        conn = self._connection("leave")
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(conn.run)
                try:
                    for _ in range(1000):
                        done = await self._eval(conn, REAP, [_NODES, _NODESTATS, self._index],
                                                [self.instance, PREFIX, "0"])
                        if done == 1:
                            break
                finally:
                    conn.invalidate()
        except Exception as exc:  # best effort: presence_ttl cleans up anyway
            log_event("could not remove this node's presence on shutdown", 30,
                      redis=self.where, error=_describe(exc))

    # ------------------------------------------------------------ receiving
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

    def _accept(self, sink: Sink, room: str, st: _Room, offset: int, epoch: bytes,
                payload: bytes, event: str | None) -> None:
        """Deliver one message unless this node already has (each offset once, in order)."""
        if st.last is not None and st.epoch == epoch and offset <= st.last:
            self.duplicates += 1
            return
        st.epoch = epoch
        st.last = offset
        sink.deliver(room, offset, payload, event)

    async def _fill(self, sink: Sink, room: str, st: _Room, epoch: bytes, upto: int) -> None:
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
            payload = _strip_time(raw)
            view = _entry_decoder.decode(payload)
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

    async def _catch_up(self, sink: Sink, rooms: list[tuple[str, _Room]]) -> None:
        """After a reconnect: deliver what was published while pub/sub was down."""
        known = [(room, st) for room, st in rooms if st.last is not None]
        for i in range(0, len(known), _CHUNK):
            chunk = known[i:i + _CHUNK]
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
        reply = cast(list[Any], await self._exec(REVOCATIONS, [_REVOKED], [now]))
        for i in range(0, len(reply), 2):
            jti, forget_at = bytes(reply[i]).decode(errors="replace"), float(reply[i + 1])
            if self._revoked_seen.get(jti, -math.inf) >= forget_at:
                continue
            self._revoked_seen[jti] = forget_at
            sink.control("revoke", {"jti": jti, "expires_at": forget_at})
        if len(self._revoked_seen) > 200_000:
            self._revoked_seen = {j: t for j, t in self._revoked_seen.items() if t > now}

    # ------------------------------------------------------------ commands
    async def _eval(self, conn: BaseConnection, script: _Script, keys: list[str],
                    args: list[Any]) -> Any:
        """EVALSHA on `conn` (requests pipeline on it); EVAL when Redis lacks the script
        (NOSCRIPT means it did not run, so running it again is safe)."""
        try:
            return await conn.create_request(b"EVALSHA", script.sha, len(keys), *keys, *args,
                                             timeout=self.command_timeout)
        except NoScriptError:
            return await conn.create_request(b"EVAL", script.source, len(keys), *keys, *args,
                                             timeout=self.command_timeout)

    async def _exec(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        """Run a script on the command connection (Redis errors raised as they are)."""
        conn = self._cmd
        if conn is None:
            raise RedisConnectionError(self.down_reason or "not connected")
        return await self._eval(conn, script, keys, args)

    async def _call(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        """Run a script now, or raise BackplaneUnavailable (never guess an answer)."""
        if not self._ready:
            raise BackplaneUnavailable(
                f"redis at {self.where}: {self.down_reason or 'connecting'}")
        return await self._run(script, keys, args)

    async def _run(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        """Run a script, turning every failure into BackplaneUnavailable."""
        try:
            return await self._exec(script, keys, args)
        except TimeoutError as exc:
            raise BackplaneUnavailable(
                f"redis at {self.where} did not answer within {self.command_timeout:g} s"
            ) from exc
        except _FAILURES as exc:
            raise BackplaneUnavailable(f"redis at {self.where}: {_describe(exc)}") from exc

    async def publish(
        self, room: str, template: MessageTemplate, event: str | None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        try:
            reply = await self._call(PUBLISH, room_keys(room), [
                room_channel(room), template.head, template.tail, _json_encode(event),
                "" if idempotency_key is None else "=" + idempotency_key,  # "" is a key too
                new_epoch(), self._size, self._httl_ms,
                self._window_ms, self.settings.idempotency_max_keys, self._room_ttl_ms,
            ])
        except BackplaneUnavailable as exc:
            if "did not answer" in str(exc):
                raise BackplaneUnavailable(
                    f"{exc}; the message may or may not have been published: retry with "
                    "the same idempotency_key") from exc
            raise
        return PublishResult(int(reply[0]), bytes(reply[1]).decode(), bool(reply[2]))

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
        st = self._watched.get(room)
        if st is not None and (st.last is None or st.epoch != epoch):
            st.epoch, st.last = epoch, offset  # messages up to here reach nobody new
        if since is None:
            return RoomPosition(offset, epoch.decode())
        recovered = bool(reply[2])
        missed = (int(reply[3]), int(reply[4])) if int(reply[3]) else None
        messages = []
        for raw in reply[5:]:
            payload = _strip_time(raw)
            messages.append((_entry_decoder.decode(payload).offset, payload))
        return RoomPosition(offset, epoch.decode(), recovered, messages, missed)

    async def history(self, room: str, since: int | None, limit: int) -> HistoryPage:
        reply = cast(list[Any], await self._call(HISTORY, room_keys(room), [
            new_epoch(), self._room_ttl_ms, "" if since is None else since, limit,
            self._httl_ms]))
        return HistoryPage(int(reply[0]), bytes(reply[1]).decode(),
                           [_strip_time(raw) for raw in reply[2:]])

    async def watch(self, room: str) -> None:
        """Subscribe to the room's channel; returns once Redis has confirmed it (or at once
        when disconnected: the next connection subscribes to every watched room)."""
        if room in self._watched:
            return
        st = self._watched[room] = _Room(room_channel(room))
        self._channels[st.channel] = room
        conn = self._sub
        if conn is None:
            return
        try:
            conn.send_command(b"SUBSCRIBE", st.channel)
            await self._ping(conn)
        except _FAILURES:
            return
        st.subscribed.set()

    async def unwatch(self, room: str) -> None:
        st = self._watched.pop(room, None)
        if st is None:
            return
        self._channels.pop(st.channel, None)
        conn = self._sub
        if conn is not None:
            with contextlib.suppress(*_FAILURES):
                conn.send_command(b"UNSUBSCRIBE", st.channel)

    # ------------------------------------------------------------ presence
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
        base = f"{PREFIX}{{{room}}}:"
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                count, info = self._mine.get(key, (0, b"{}"))
                await self._exec(PRESENCE_SET, [base + "p", base + "pu", self._index], [
                    self.instance, user, count, info, room_channel(room),
                    3 * self._presence_ttl_ms, f"{room}\0{user}"])
        except _FAILURES:
            self._dirty.add(key)  # sent again by the heartbeat once Redis answers
        except BaseException:
            self._dirty.add(key)
            raise
        finally:
            self._inflight.discard(key)

    async def presence(self, room: str) -> list[dict[str, Any]]:
        reply = cast(list[Any], await self._call(
            PRESENCE_GET, [f"{PREFIX}{{{room}}}:p", _NODES], []))
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
            except _FAILURES as exc:
                log_event("redis heartbeat failed", 30, redis=self.where, error=_describe(exc))

    async def _heartbeat(self, sink: Sink) -> None:
        stats: dict[str, Any] = {"node": self.settings.node}
        local = getattr(sink, "stats", None)
        if callable(local):
            counts = local()
            stats["connections"] = counts.get("connections", 0)
            stats["users"] = counts.get("users", 0)
        reply = cast(list[Any], await self._exec(HEARTBEAT, [_NODES, _NODESTATS, self._index], [
            self.instance, self._presence_ttl_ms, _json_encode(stats)]))
        self._registered = True
        if int(reply[0]) == 1:
            self._dirty.update(self._mine)  # new here, or reaped while away: say it all again
        for key in list(self._dirty):
            await self._push_presence(key)
        watched = list(self._watched)
        present = list({room for room, _ in self._mine})
        rooms = watched + present
        for i in range(0, len(rooms), _CHUNK):
            chunk = rooms[i:i + _CHUNK]
            n_watched = max(0, min(len(watched) - i, len(chunk)))
            await self._exec(RENEW, [], [
                PREFIX, self._room_ttl_ms, 3 * self._presence_ttl_ms, n_watched, *chunk])
        for dead in reply[1:]:
            node = bytes(dead).decode()
            for _ in range(1000):
                done = await self._exec(REAP, [_NODES, _NODESTATS, f"{PREFIX}n:{node}:i"],
                                        [node, PREFIX, "1"])
                if done == 1:
                    break
            log_event("reaped a dead node's presence", node=node)

    # ------------------------------------------------------------ control and stats
    async def send_control(self, kind: str, payload: dict[str, Any]) -> None:
        message = kind.encode() + b"\n" + _json_encode(payload)
        if kind == "revoke":
            now = time.time()
            expires = payload.get("expires_at")
            forget_at = float(expires) if expires is not None else now + _REVOKE_KEEP
            await self._call(REVOKE, [_REVOKED], [
                CONTROL_CHANNEL, message, str(payload["jti"]), forget_at, now])
        else:
            await self._call(CONTROL, [], [CONTROL_CHANNEL, message])

    async def stats(self) -> dict[str, Any]:
        """Cluster-wide: the live nodes (from their heartbeats) and their connections as
        of each one's last heartbeat; and this node's backplane counters."""
        reply = cast(list[Any], await self._call(
            CLUSTER, [_NODES, _NODESTATS], []))
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
            "reconnects": self.reconnects,
        }


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if isinstance(exc, RedisConnectionError) and cause is not None and str(cause):
        text = f"{text}: {cause}"
    return text[:200]
