"""Redis Cluster: which primary owns which hash slot (protocol §16, `redis+cluster://`).

The URL names some of the cluster's nodes: `redis+cluster://[USER:PASSWORD@]HOST:PORT
[,HOST:PORT...]`. Each session of the backplane asks them, in turn, for the slot map
(`CLUSTER SLOTS`) and opens a command and a pub/sub connection to every primary. A room's
keys and its shard channel share the room's slot, so each script runs on one primary and
each message travels only to the shard that owns its room (SPUBLISH / SSUBSCRIBE). A
failover or a resharding shows as a dead connection, a MOVED reply or a SUNSUBSCRIBE from
the server: the session ends and the next one reads the map again, resubscribes and
catches up, as after a Sentinel failover.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from roomcast.backplane.redis.keys import SLOTS
from roomcast.backplane.redis.sentinel import split_url
from roomcast.settings import SettingsError

SCHEME = "redis+cluster://"
_FORM = "redis+cluster://HOST:PORT[,HOST:PORT...]"


@dataclass(frozen=True, slots=True)
class ClusterURL:
    """A parsed `redis+cluster://` URL."""

    nodes: tuple[tuple[str, int], ...]
    credentials: str  # "USER:PASSWORD@" as written (quoted), or ""

    def node_url(self, host: str, port: int) -> str:
        """The plain redis:// URL of one node, with the credentials (a cluster has db 0)."""
        return f"redis://{self.credentials}{host}:{port}/0"


def parse(url: str) -> ClusterURL:
    """Read a `redis+cluster://` URL, or raise SettingsError saying how to write it."""
    credentials, nodes, path = split_url(url, SCHEME, _FORM)
    if path.strip("/") not in ("", "0"):
        raise SettingsError(
            f"backplane: a Redis Cluster has only database 0; write {url!r} as {_FORM}")
    return ClusterURL(tuple(nodes), credentials)


def _text(value: Any) -> str:
    return bytes(value).decode() if isinstance(value, (bytes, bytearray)) else str(value)


def slot_owners(reply: Any, asked_host: str) -> tuple[list[tuple[str, int]], list[int]]:
    """From a CLUSTER SLOTS reply: the primaries, and for each of the 16384 slots the index
    of its primary. A primary shown without an address (`""` or `?`) is on the host that
    was asked. Raises ValueError naming how many slots have no primary."""
    primaries: list[tuple[str, int]] = []
    owner = [-1] * SLOTS
    for entry in reply:
        start, end, primary = int(entry[0]), int(entry[1]), entry[2]
        host = _text(primary[0])
        if host in ("", "?"):
            host = asked_host
        address = (host, int(primary[1]))
        if address not in primaries:
            primaries.append(address)
        index = primaries.index(address)
        for slot in range(start, min(end, SLOTS - 1) + 1):
            owner[slot] = index
    missing = owner.count(-1)
    if missing:
        raise ValueError(f"{missing} of {SLOTS} slots have no primary (the cluster is down "
                         "or still forming)")
    return primaries, owner
