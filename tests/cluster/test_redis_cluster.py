"""Redis Cluster (protocol §16, `redis+cluster://`): rooms on every shard; a primary killed
under load is replaced by its replica, and every node finds the new slot map, resubscribes
and catches up; no acknowledged message is lost or duplicated under an unchanged epoch,
and an epoch and an offset never name two messages. Messages of a room travel only to the
shard that owns it (sharded pub/sub)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from roomcast.backplane.redis.cluster import parse, slot_owners
from roomcast.backplane.redis.keys import key_slot, room_channel
from roomcast.settings import SettingsError
from tests.cluster.conftest import wait_until
from tests.cluster.rediscluster import RedisCluster, call, running_cluster
from tests.cluster.test_sentinel import FAILOVER, Publisher, told
from tests.support import connect, running_server


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[RedisCluster]:
    with running_cluster(tmp_path) as cluster:
        yield cluster


def rooms_on_every_primary(cluster: RedisCluster) -> dict[int, str]:
    """A room per primary (port -> room), found by trying names."""
    rooms: dict[int, str] = {}
    for i in range(1000):
        room = f"feed{i}"
        rooms.setdefault(cluster.primary_for(room_channel(room).decode()), room)
        if len(rooms) == len(cluster.primaries()):
            return rooms
    raise AssertionError("no room names found for every primary")


async def test_killing_a_primary_under_load_loses_nothing_acknowledged(
        topology: RedisCluster) -> None:
    rooms = rooms_on_every_primary(topology)
    async with running_server(backplane=topology.url, node="a") as a, \
            running_server(backplane=topology.url, node="b") as b, connect(b, sub="u") as u:
        await wait_until(lambda: a.ready and b.ready)
        epochs = (await u.subscribe(*rooms.values()))["rooms"]
        victim = next(iter(rooms))
        doomed = rooms[victim]
        publishers = {room: Publisher(a, room) for room in rooms.values()}
        stop, caught_up = trio.Event(), trio.Event()
        feeds: dict[str, list[tuple[str, int, int]]] = {room: [] for room in rooms.values()}
        resets: list[dict[str, Any]] = []
        async with trio.open_nursery() as nursery:
            for publisher in publishers.values():
                nursery.start_soon(publisher.run, stop)
            nursery.start_soon(read_all, u, epochs, caught_up, feeds, resets)
            await wait_until(lambda: all(len(p.acked) >= 30 for p in publishers.values()))
            killed = time.monotonic()
            await trio.to_thread.run_sync(topology.kill, victim)
            await wait_until(lambda: publishers[doomed].failed > 0, timeout=FAILOVER)
            await trio.to_thread.run_sync(topology.wait_failover, victim, FAILOVER)
            switched = time.monotonic() - killed
            before = {room: len(p.acked) for room, p in publishers.items()}
            await wait_until(lambda: all(len(p.acked) >= before[room] + 30
                                         for room, p in publishers.items()), timeout=FAILOVER)
            stop.set()
            with trio.fail_after(FAILOVER):
                for publisher in publishers.values():
                    await publisher.done.wait()
            await wait_until(lambda: all(
                feeds[room] and feeds[room][-1][2] >= max(p.acked.values())
                for room, p in publishers.items()), timeout=FAILOVER)
            caught_up.set()
            nursery.cancel_scope.cancel()
        assert a.backplane.failovers >= 1 and b.backplane.failovers >= 1  # type: ignore[attr-defined]
        for room, publisher in publishers.items():
            got = feeds[room]
            assert len({n for _, _, n in got}) == len(got), f"{room}: delivered twice"
            for epoch, offset, n in got:
                if (epoch, offset) in publisher.acked:
                    assert publisher.acked[(epoch, offset)] == n
                else:
                    assert n in publisher.unanswered, (room, epoch, offset, n)
            received = {(e, o) for e, o, _ in got}
            missing = [k for k in publisher.acked if k not in received]
            room_resets = [r for r in resets if r["room"] == room]
            assert all(told(k, room_resets) for k in missing), (missing, room_resets)
        doomed_publisher = publishers[doomed]
        assert doomed_publisher.first_failure is not None
        print(f"the cluster moved the killed primary's slots {switched:.2f} s after the kill; "
              f"publishes to its room failed from {doomed_publisher.first_failure - killed:.2f}"
              f" s for {doomed_publisher.outage:.2f} s ({doomed_publisher.failed} refused); "
              f"{sum(len(p.acked) for p in publishers.values())} acknowledged in "
              f"{len(rooms)} rooms, {len(resets)} resets")


async def read_all(client: Any, epochs: dict[str, Any], until: trio.Event,
                   feeds: dict[str, list[tuple[str, int, int]]],
                   resets: list[dict[str, Any]]) -> None:
    """Collect (epoch, offset, n) of every message per room, following reset frames."""
    current = {room: info["epoch"] for room, info in epochs.items()}
    while True:
        frame = await client.recv(timeout=FAILOVER)
        room = frame.get("room")
        if room not in feeds:
            continue
        if frame["type"] == "reset":
            resets.append(frame)
            current[room] = frame["epoch"]
        elif frame["type"] == "message":
            feeds[room].append((current[room], frame["offset"], frame["data"]["n"]))
            if until.is_set():
                return


async def test_a_rooms_messages_reach_only_the_shard_that_owns_it(
        topology: RedisCluster) -> None:
    """SSUBSCRIBE on the owning primary only: the other primaries carry no shard channel."""
    rooms = rooms_on_every_primary(topology)
    async with running_server(backplane=topology.url, node="a") as a, \
            connect(a, sub="u") as u:
        await wait_until(lambda: a.ready)
        await u.subscribe(*rooms.values())
        for port, room in rooms.items():
            channel = room_channel(room).decode()
            for other in topology.primaries():
                listed = call(other, "PUBSUB", "SHARDCHANNELS", "rc:*:c")
                assert (channel.encode() in listed) == (other == port), (port, other, listed)
            result = await a.publish_message(room, {"room": room})
            message = await u.recv_type("message")
            assert (message["room"], message["offset"]) == (room, result.offset)


def test_cluster_urls_are_read_or_refused_saying_how_to_write_them() -> None:
    url = parse("redis+cluster://u:p%40ss@h1:7000,h2:7001")
    assert url.nodes == (("h1", 7000), ("h2", 7001))
    assert url.node_url("10.0.0.9", 7002) == "redis://u:p%40ss@10.0.0.9:7002/0"
    for bad in ("redis+cluster://h1", "redis+cluster://h1:7000/3", "redis+cluster://h1:x"):
        with pytest.raises(SettingsError, match="redis\\+cluster://HOST:PORT"):
            parse(bad)


def test_a_slot_map_names_each_slots_primary_or_says_how_many_have_none() -> None:
    reply = [[0, 5460, [b"", 7000, b"id0"]], [5461, 10922, [b"10.0.0.2", 7001, b"id1"]],
             [10923, 16383, [b"10.0.0.3", 7002, b"id2"], [b"10.0.0.4", 7003, b"id3"]]]
    primaries, owner = slot_owners(reply, "10.0.0.1")
    assert primaries == [("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 7002)]
    assert (owner[0], owner[5461], owner[16383]) == (0, 1, 2)
    with pytest.raises(ValueError, match="5461 of 16384 slots have no primary"):
        slot_owners(reply[1:], "10.0.0.1")


def test_key_slots_follow_redis_hash_tags() -> None:
    assert key_slot("123456789") == 12739  # the CRC16 check value Redis Cluster uses
    assert key_slot("rc:{room}:o") == key_slot("rc:{room}:c") == key_slot("room")
    assert key_slot("rc:{}:o") == key_slot(b"rc:{}:o") != key_slot("")  # empty tag: whole key
    assert key_slot("rc:{a{b}c}:o") == key_slot("a{b")  # up to the first closing brace
