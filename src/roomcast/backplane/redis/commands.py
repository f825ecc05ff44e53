"""What every part of the Redis backplane shares: the command connection, readiness, and
running a script with failures turned into errors a caller can act on."""

from __future__ import annotations

from typing import Any

import trio
from coredis.connection import BaseConnection
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import ReadOnlyError, RedisError

from roomcast.backplane.base import BackplaneUnavailable
from roomcast.backplane.redis.scripts import Script, evalsha
from roomcast.settings import Settings

FAILURES = (RedisError, TimeoutError, OSError, trio.TooSlowError)


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
    _cmd: BaseConnection | None

    async def _eval(self, conn: BaseConnection, script: Script, keys: list[str],
                    args: list[Any]) -> Any:
        """EVALSHA on `conn`, EVAL when Redis lacks the script."""
        return await evalsha(conn, script, keys, args, self.command_timeout)

    async def _exec(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run a script on the command connection (Redis errors raised as they are)."""
        conn = self._cmd
        if conn is None:
            raise RedisConnectionError(self.down_reason or "not connected")
        return await self._eval(conn, script, keys, args)

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
            if isinstance(exc, ReadOnlyError) and self._cmd is not None:
                # A replica now (failed over): end the session, find the master again.
                self.down_reason = f"{self.where} became a replica"
                self._cmd.invalidate()
            raise BackplaneUnavailable(f"redis at {self.where}: {describe(exc)}") from exc
