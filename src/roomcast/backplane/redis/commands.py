"""What every part of the Redis backplane shares: the command connections (one, or one per
primary of a Redis Cluster, chosen by the hash slot of a script's first key), readiness,
and running a script with failures turned into errors a caller can act on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import trio
from coredis.exceptions import AskError, MovedError, ReadOnlyError, RedisError
from coredis.exceptions import ConnectionError as RedisConnectionError

from roomcast.backplane.base import BackplaneUnavailable
from roomcast.backplane.redis.keys import CHUNK, key_slot
from roomcast.backplane.redis.scripts import Script, evalsha
from roomcast.backplane.redis.wire import RespConnection
from roomcast.settings import Settings

FAILURES = (RedisError, TimeoutError, OSError, trio.TooSlowError)
T = TypeVar("T")


def describe(exc: BaseException) -> str:
    """A short text for a Redis failure, with the socket error behind it when there is one."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if isinstance(exc, RedisConnectionError) and cause is not None and str(cause):
        text = f"{text}: {cause}"
    return text[:200]


class Commands:
    """The command side: one pipelined connection while Redis is up, and the node's
    settings; RedisBackplane fills these in."""

    command_timeout = 3.0  # seconds to wait for any one Redis reply
    settings: Settings
    instance: str
    where: str
    down_reason: str
    _ready: bool
    _cmd: RespConnection | None  # the node-wide keys' connection (the only one off Cluster)
    _cmds: list[RespConnection]  # every command connection of this session
    _slot_cmds: list[RespConnection] | None  # Cluster: each hash slot's primary's connection
    _slot_cache: dict[str, int]

    def _slot(self, key: str) -> int:
        """The hash slot of a key, remembered (the publish path asks it every time)."""
        cache = self._slot_cache
        slot = cache.get(key)
        if slot is None:
            if len(cache) >= 65536:
                cache.clear()
            slot = cache[key] = key_slot(key)
        return slot

    def _conn_for(self, key: str) -> RespConnection:
        """The command connection for a script whose first key is `key` ("": none)."""
        slots = self._slot_cmds
        conn = self._cmd if slots is None or not key else slots[self._slot(key)]
        if conn is None:
            raise RedisConnectionError(self.down_reason or "not connected")
        return conn

    def _groups(self, items: list[T], key_of: Callable[[T], str]) -> Iterator[list[T]]:
        """`items` in chunks whose keys share one hash slot on a Cluster (a script may only
        touch one slot there), of at most CHUNK each."""
        if self._slot_cmds is None:
            for i in range(0, len(items), CHUNK):
                yield items[i:i + CHUNK]
            return
        by_slot: dict[int, list[T]] = {}
        for item in items:
            by_slot.setdefault(self._slot(key_of(item)), []).append(item)
        for group in by_slot.values():
            for i in range(0, len(group), CHUNK):
                yield group[i:i + CHUNK]

    def _end_session(self, reason: str) -> None:
        """Close every connection of this session: the next one starts over (finds the
        master or the slot map again, resubscribes and catches up)."""
        self.down_reason = self.down_reason or reason
        for conn in self._cmds:
            conn.invalidate()

    async def _eval(self, conn: RespConnection, script: Script, keys: list[str],
                    args: list[Any]) -> Any:
        """EVALSHA on `conn`, EVAL when Redis lacks the script."""
        return await evalsha(conn, script, keys, args, self.command_timeout)

    async def _exec(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run a script on the connection of its keys' slot (Redis errors raised as they
        are; a Cluster that moved the slot ends the session, whose successor asks again)."""
        conn = self._conn_for(keys[0] if keys else "")
        try:
            return await self._eval(conn, script, keys, args)
        except AskError as exc:
            self._moved(exc)
            raise

    def _moved(self, exc: AskError) -> None:
        """MOVED: the slot map changed (failover, resharding): start a new session. ASK (a
        slot half way through a migration) only fails this command."""
        if isinstance(exc, MovedError):
            self._end_session(f"the cluster moved a slot ({describe(exc)})")

    async def _call(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run a script now, or raise BackplaneUnavailable (never guess an answer)."""
        if not self._ready:
            raise BackplaneUnavailable(
                f"redis at {self.where}: {self.down_reason or 'connecting'}")
        return await self._run(script, keys, args)

    async def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run a script, turning every failure into BackplaneUnavailable."""
        try:
            return await self._exec(script, keys, args)
        except TimeoutError as exc:
            raise BackplaneUnavailable(
                f"redis at {self.where} did not answer within {self.command_timeout:g} s"
            ) from exc
        except FAILURES as exc:
            if isinstance(exc, ReadOnlyError):
                # A replica now (failed over): end the session, find the master again.
                self._end_session(f"{self.where} became a replica")
            raise BackplaneUnavailable(f"redis at {self.where}: {describe(exc)}") from exc
