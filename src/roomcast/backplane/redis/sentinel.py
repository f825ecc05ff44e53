"""Redis Sentinel: where the master is now (protocol §16, `redis+sentinel://`).

The URL names the sentinels, the master's name and the database:
`redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER/DB`; the credentials
are the master's. Each session of the backplane asks the sentinels, in turn, for the
master's address (`SENTINEL get-master-addr-by-name`), connects to it and checks with
`ROLE` that it is a master, so a failover ends the session and the next one finds the new
master. The sentinels' `+switch-master` announcements wake a node waiting to reconnect.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import trio
from coredis.connection import TCPLocation
from coredis.exceptions import ConnectionError as RedisConnectionError

from roomcast.backplane.redis.commands import FAILURES, describe
from roomcast.backplane.redis.wire import RespConnection
from roomcast.settings import SettingsError

SCHEME = "redis+sentinel://"
_FORM = "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER/DB"


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """A parsed `redis+sentinel://` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    credentials: str  # "USER:PASSWORD@" as written (quoted), or ""

    def master_url(self, host: str, port: int) -> str:
        """The plain redis:// URL of the master at host:port, with the credentials and db."""
        return f"redis://{self.credentials}{host}:{port}/{self.db}"


def split_url(url: str, scheme: str, form: str) -> tuple[str, list[tuple[str, int]], str]:
    """A `SCHEME[USER:PASSWORD@]HOST:PORT[,HOST:PORT...][/PATH]` URL: the credentials as
    written (quoted, with `@`, or ""), the addresses, and the path; SettingsError saying how
    to write it otherwise."""
    rest = url[len(scheme):]
    credentials = ""
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        credentials = quote(unquote(userinfo), safe=":") + "@"
    hosts, _, path = rest.partition("/")
    addresses = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(
                f"backplane: {item!r} in {url!r} is not HOST:PORT; write it as {form}")
        addresses.append((host.strip("[]"), int(port)))
    return credentials, addresses, path.split("?")[0]


def parse(url: str) -> SentinelURL:
    """Read a `redis+sentinel://` URL, or raise SettingsError saying how to write it."""
    credentials, sentinels, path = split_url(url, SCHEME, _FORM)
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise SettingsError(f"backplane: cannot use {url!r}; write it as {_FORM}")
    db = parts[1] if len(parts) == 2 else "0"
    if not db.isdigit():
        raise SettingsError(f"backplane: database {db!r} in {url!r} is not a number")
    return SentinelURL(tuple(sentinels), unquote(parts[0]), int(db), credentials)


async def ask(host: str, port: int, command: list[bytes], timeout: float) -> Any:
    """One command to one sentinel, on a connection of its own (closed after)."""
    return await ask_on(RespConnection(TCPLocation(host, port), connect_timeout=timeout,
                                       stream_timeout=timeout), command, timeout)


async def ask_on(conn: RespConnection, command: list[bytes], timeout: float) -> Any:
    """One command on `conn`, a connection not yet running, closed after."""
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(timeout):
                await nursery.start(conn.run)
            try:
                return await conn.create_request(*command, timeout=timeout)
            finally:
                conn.invalidate()
    except BaseExceptionGroup as group:  # the connection's task failing inside the nursery
        raise group.exceptions[0] from None


async def locate(url: SentinelURL, timeout: float) -> tuple[str, int]:
    """The master's address as the first sentinel that knows it says; RedisConnectionError
    naming every sentinel's failure when none does."""
    failures = []
    for host, port in url.sentinels:
        try:
            reply = await ask(host, port, [b"SENTINEL", b"get-master-addr-by-name",
                                           url.master.encode()], timeout)
        except FAILURES as exc:
            failures.append(f"{host}:{port}: {describe(exc)}")
            continue
        if not reply:
            failures.append(f"{host}:{port}: does not monitor a master named {url.master!r}")
            continue
        return bytes(reply[0]).decode(), int(reply[1])
    raise RedisConnectionError("no sentinel named the master (" + "; ".join(failures) + ")")


async def follow(url: SentinelURL, timeout: float, on_switch: Callable[[], None]) -> None:
    """Call `on_switch` whenever a sentinel announces a new master for `url.master`
    (`+switch-master`), so that a node reconnects at once instead of after its backoff.
    Listens to one sentinel at a time, the next one when that connection ends; a hint only:
    without it, the next reconnection attempt asks the sentinels anyway."""
    name = url.master.encode()
    for attempt in itertools.count():
        host, port = url.sentinels[attempt % len(url.sentinels)]
        conn = RespConnection(TCPLocation(host, port), connect_timeout=timeout)
        with contextlib.suppress(Exception):  # a hint: reconnecting does not depend on it
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(conn.run)
                    conn.send_command(b"SUBSCRIBE", b"+switch-master")
                    while True:
                        for push in await conn.next_pushes():
                            if push[0] == b"message" and bytes(push[2]).startswith(name + b" "):
                                on_switch()
                    nursery.cancel_scope.cancel()
            finally:
                conn.invalidate()
        await trio.sleep(1.0)
