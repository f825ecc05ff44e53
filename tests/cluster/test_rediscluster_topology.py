"""The Redis Cluster test topology itself: 3 primaries cover the 16384 slots, hash tags
spread keys over them, a non-owner answers -MOVED, and a killed primary's replica takes
its slots over (with the data written before the kill)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.cluster.rediscluster import SLOTS, RedisCluster, call, running_cluster

FAILOVER = 30.0  # seconds a replica may take to be promoted on a busy machine


@pytest.fixture(scope="module")
def rc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One cluster for the file (the failover test, last, breaks it)."""
    began = time.monotonic()
    with running_cluster(tmp_path_factory.mktemp("rediscluster")) as cluster:
        print(f"\nRedis Cluster started in {time.monotonic() - began:.2f} s: {cluster.url}")
        yield cluster


def spread_keys(rc: RedisCluster) -> dict[int, str]:
    """A key per primary: hash tags tried in turn until each primary owns one."""
    keys: dict[int, str] = {}
    for i in range(1000):
        key = f"{{room-{i}}}:k"
        keys.setdefault(rc.primary_for(key), key)
        if len(keys) == 3:
            return keys
    raise AssertionError(f"1000 hash tags did not reach 3 primaries: {keys}")


def test_slots_tags_and_moved(rc: RedisCluster) -> None:
    primaries = rc.primaries()
    assert len(primaries) == 3 and primaries == sorted(rc.started_primaries)
    assert rc.url == "redis+cluster://" + ",".join(f"127.0.0.1:{p}"
                                                   for p in rc.started_primaries)
    assert len(rc.nodes) == 6
    ranges = call(primaries[0], "CLUSTER", "SLOTS")
    assert sum(r[1] - r[0] + 1 for r in ranges) == SLOTS
    assert {r[2][1] for r in ranges} == set(primaries)

    for owner, key in spread_keys(rc).items():
        assert rc.command(owner, "SET", key, "v " + key) == b"+OK\r\n"
        assert call(owner, "GET", key) == b"v " + key.encode()
        other = next(p for p in primaries if p != owner)
        slot = call(owner, "CLUSTER", "KEYSLOT", key)
        assert rc.command(other, "GET", key) == f"-MOVED {slot} 127.0.0.1:{owner}\r\n".encode()

    rc.flushall()
    assert all(call(p, "DBSIZE") == 0 for p in rc.primaries())


def test_killed_primary_fails_over_to_its_replica(rc: RedisCluster) -> None:
    rc.flushall()
    key = "{failover}:k"
    dead = rc.primary_for(key)
    slot = call(dead, "CLUSTER", "KEYSLOT", key)
    (replica,) = [r[1] for first, last, _, *replicas in call(dead, "CLUSTER", "SLOTS")
                  if first <= slot <= last for r in replicas]
    assert rc.command(dead, "SET", key, "kept") == b"+OK\r\n"
    assert call(dead, "WAIT", "1", "5000") == 1  # the replica has it before the kill

    began = time.monotonic()
    rc.kill(dead)
    rc.wait_failover(dead, FAILOVER)
    took = time.monotonic() - began
    print(f"\nfailover of primary {dead} to replica {replica} took {took:.2f} s")

    assert rc.primary_for(key) == replica
    assert dead not in rc.primaries() and len(rc.primaries()) == 3
    assert call(replica, "GET", key) == b"kept"
    assert rc.command(replica, "SET", key, "after") == b"+OK\r\n"
