"""Sentinel-managed Redis (protocol §16): nodes find the master through the sentinels, and
after the master is killed under load they find the new one, resubscribe and catch up; no
acknowledged message is lost or duplicated under an unchanged epoch, and an epoch and an
offset never name two messages. A Redis that comes back behind what nodes saw (writes
lost) ends the room's epoch."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from roomcast.backplane import BackplaneUnavailable
from roomcast.backplane.redis.sentinel import parse
from roomcast.router import Router
from roomcast.settings import Settings, SettingsError
from tests.cluster.conftest import wait_until
from tests.cluster.sentinels import SentinelSet, command, server
from tests.support import Client, connect, free_port, running_server

FAILOVER = 30.0  # seconds a failover and the nodes' reconnection may take on a busy machine


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    topology = SentinelSet(tmp_path)
    try:
        topology.start()
        yield topology
    finally:
        topology.kill()


class Publisher:
    """Publishes n = 0, 1, 2... (each attempt its own n) into a room as fast as answers come
    back; records each acknowledged (epoch, offset), the attempts that failed (which may or
    may not have been published) and how long publishes failed."""

    def __init__(self, node: Router, room: str) -> None:
        self.node, self.room = node, room
        self.acked: dict[tuple[str, int], int] = {}  # (epoch, offset) -> n
        self.failed = 0
        self.unanswered: set[int] = set()  # n of the attempts that got no offset
        self.first_failure: float | None = None
        self.outage = 0.0  # seconds from the first failure to the next success
        self.done = trio.Event()  # set once the last attempt has its answer

    async def run(self, stop: trio.Event) -> None:
        try:
            await self._run(stop)
        finally:
            self.done.set()

    async def _run(self, stop: trio.Event) -> None:
        n = -1
        while not stop.is_set():
            n += 1
            try:
                result = await self.node.publish_message(self.room, {"n": n})
            except BackplaneUnavailable:
                self.unanswered.add(n)
                self.failed += 1
                if self.first_failure is None:
                    self.first_failure = time.monotonic()
                await trio.sleep(0.01)
                continue
            if self.first_failure is not None and not self.outage:
                self.outage = time.monotonic() - self.first_failure
            key = (result.epoch, result.offset)
            assert key not in self.acked, f"{key} named two messages: {self.acked[key]}, {n}"
            self.acked[key] = n


def told(key: tuple[str, int], resets: list[dict[str, Any]]) -> bool:
    """Whether the room's resets told a subscriber it will not get message `key`, (epoch,
    offset): a reset into another epoch ended its stream, or one in its own stream names
    it in `missed` (history no longer held it when the node came back)."""
    return any(r["epoch"] != key[0] or (
        "missed" in r and r["missed"]["from"] <= key[1] <= r["missed"]["to"]) for r in resets)


async def read_feed(client: Client, room: str, epoch: str, until: trio.Event,
                    got: list[tuple[str, int, int]], resets: list[dict[str, Any]]) -> None:
    """Collect (epoch, offset, n) of every message, following reset frames."""
    while True:
        frame = await client.recv(timeout=FAILOVER)
        if frame.get("room") != room:
            continue
        if frame["type"] == "reset":
            resets.append(frame)
            epoch = frame["epoch"]
        elif frame["type"] == "message":
            got.append((epoch, frame["offset"], frame["data"]["n"]))
            if until.is_set():
                return


async def test_killing_the_master_under_load_loses_nothing_acknowledged(
    sentinels: SentinelSet,
) -> None:
    # The first sentinel named is down: the nodes ask the next ones.
    url = sentinels.url.replace("://", f"://127.0.0.1:{free_port()},")
    async with running_server(backplane=url, node="a") as a, \
            running_server(backplane=url, node="b") as b, connect(b, sub="u") as u:
        await wait_until(lambda: a.ready and b.ready)
        epoch = (await u.subscribe("feed"))["rooms"]["feed"]["epoch"]
        publisher = Publisher(a, "feed")
        stop, caught_up = trio.Event(), trio.Event()
        got: list[tuple[str, int, int]] = []
        resets: list[dict[str, Any]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher.run, stop)
            nursery.start_soon(read_feed, u, "feed", epoch, caught_up, got, resets)
            await wait_until(lambda: len(publisher.acked) >= 50)
            old_master = sentinels.master.port
            killed = time.monotonic()
            sentinels.master.kill()
            await wait_until(lambda: publisher.failed > 0, timeout=FAILOVER)
            await wait_until(lambda: sentinels.master_port() != old_master, timeout=FAILOVER)
            switched = time.monotonic() - killed
            before = len(publisher.acked)
            await wait_until(lambda: len(publisher.acked) >= before + 50, timeout=FAILOVER)
            stop.set()
            with trio.fail_after(FAILOVER):
                await publisher.done.wait()  # an answer in flight is acknowledged too
            await wait_until(lambda: len(got) > 0 and got[-1][2] >= max(
                publisher.acked.values()), timeout=FAILOVER)
            caught_up.set()
            nursery.cancel_scope.cancel()
        assert a.backplane.failovers == 1 and b.backplane.failovers == 1  # type: ignore[attr-defined]
        # Each received message is the one acknowledged under its (epoch, offset), once; one
        # without an acknowledgement is an attempt whose answer was lost with the master.
        assert len({n for _, _, n in got}) == len(got), "a message was delivered twice"
        for key_epoch, offset, n in got:
            if (key_epoch, offset) in publisher.acked:
                assert publisher.acked[(key_epoch, offset)] == n
            else:
                assert n in publisher.unanswered, (key_epoch, offset, n)
        # Every acknowledged message reached the subscriber, unless a reset said otherwise
        # (§17): one that ended its stream (another epoch), or one in its own stream whose
        # `missed` names it (a node away for longer than history holds).
        received = {(e, o) for e, o, _ in got}
        missing = [k for k in publisher.acked if k not in received]
        assert all(told(k, resets) for k in missing), (missing, resets)
        assert publisher.first_failure is not None
        print(f"sentinels named the new master {switched:.2f} s after the kill; publishes "
              f"failed from {publisher.first_failure - killed:.2f} s for "
              f"{publisher.outage:.2f} s ({publisher.failed} refused), "
              f"{len(publisher.acked)} acknowledged, {len(resets)} resets")


async def test_a_switchover_with_the_old_master_alive_moves_every_node(
        sentinels: SentinelSet) -> None:
    """SENTINEL FAILOVER: the old master stays up and becomes a replica; the node leaves it
    (announced switch, ROLE) and goes on with the same stream on the new master."""
    async with running_server(backplane=sentinels.url, node="a") as a, \
            connect(a, sub="u") as u:
        await wait_until(lambda: a.ready)
        epoch = (await u.subscribe("doc"))["rooms"]["doc"]["epoch"]
        assert await a.publish("doc", {"n": 1}) == 1
        old = sentinels.master.port
        assert command(sentinels.sentinels[0].port, "SENTINEL", "FAILOVER",
                       "mymaster").startswith(b"+OK")
        await wait_until(lambda: sentinels.master_port() != old, timeout=FAILOVER)
        await wait_until(lambda: a.backplane.failovers == 1 and a.ready,  # type: ignore[attr-defined]
                         timeout=FAILOVER)
        result = await a.publish_message("doc", {"n": 2})
        assert (result.epoch, result.offset) == (epoch, 2)
        got = [await u.recv_type("message") for _ in range(2)]
        assert [m["offset"] for m in got] == [1, 2]


async def test_a_failover_that_lost_acknowledged_writes_ends_the_rooms_epoch(
        tmp_path: Path) -> None:
    """The replica stops getting the master's writes; two more publishes are acknowledged;
    the master dies and the replica, behind by those two, is promoted. The node that saw
    offsets 4 and 5 ends the room's epoch instead of handing them out again."""
    topology = SentinelSet(tmp_path, lossy=True)
    try:
        await trio.to_thread.run_sync(topology.start)
        async with running_server(backplane=topology.url, node="n") as n, \
                connect(n, sub="u") as u:
            await wait_until(lambda: n.ready)
            epoch = (await u.subscribe("doc"))["rooms"]["doc"]["epoch"]
            for i in range(3):
                await n.publish("doc", {"n": i})
            replica = topology.replica.port
            await wait_until(lambda: command(replica, "GET", "rc:{doc}:o") == b"$1\r\n3\r\n")
            assert topology.proxy is not None
            topology.proxy.hold()  # the replica hears nothing more, and nothing is closed
            assert [await n.publish("doc", {"n": i}) for i in (3, 4)] == [4, 5]
            for _ in range(5):
                await u.recv_type("message")
            topology.master.kill()
            await wait_until(lambda: topology.master_port() == replica, timeout=FAILOVER)
            await wait_until(lambda: n.ready, timeout=FAILOVER)
            reset = await u.recv_type("reset", timeout=FAILOVER)
            assert reset["epoch"] != epoch and reset["offset"] == 0, reset
            result = await n.publish_message("doc", {"n": 5})
            assert (result.epoch, result.offset) == (reset["epoch"], 1)
            message = await u.recv_type("message")
            assert (message["offset"], message["data"]) == (1, {"n": 5})
            assert n.backplane.fenced == 1  # type: ignore[attr-defined]
    finally:
        topology.kill()


async def test_a_redis_behind_what_nodes_saw_ends_the_rooms_epoch(tmp_path: Path) -> None:
    """A restart from an older snapshot: same epoch, counter behind. The node that saw the
    lost offsets ends the stream instead of handing those offsets out again."""
    port = free_port()
    redis = server(port, "--dir", str(tmp_path), "--dbfilename", "old.rdb")
    redis.start()
    try:
        async with running_server(backplane=f"redis://127.0.0.1:{port}/0", node="n") as n, \
                connect(n, sub="u") as u:
            await wait_until(lambda: n.ready)
            epoch = (await u.subscribe("doc"))["rooms"]["doc"]["epoch"]
            for i in range(3):
                await n.publish("doc", {"n": i})
            assert command(port, "SAVE").startswith(b"+OK")  # the snapshot holds offset 3
            lost = [await n.publish("doc", {"n": i}) for i in range(3, 5)]
            assert lost == [4, 5]
            for _ in range(5):
                await u.recv_type("message")
            redis.kill()
            await wait_until(lambda: not n.ready)
            redis.start()  # from the snapshot: the same epoch at offset 3
            await wait_until(lambda: n.ready, timeout=FAILOVER)
            reset = await u.recv_type("reset")
            assert reset["epoch"] != epoch and reset["offset"] == 0, reset
            result = await n.publish_message("doc", {"n": 5})
            assert (result.epoch, result.offset) == (reset["epoch"], 1)
            message = await u.recv_type("message")
            assert (message["offset"], message["data"]) == (1, {"n": 5})
            assert n.backplane.fenced == 1  # type: ignore[attr-defined]
    finally:
        redis.kill()


def test_sentinel_urls_are_read_or_refused_saying_how_to_write_them() -> None:
    url = parse("redis+sentinel://u:p%40ss@h1:26379,h2:26380/mymaster/3")
    assert url.sentinels == (("h1", 26379), ("h2", 26380))
    assert (url.master, url.db) == ("mymaster", 3)
    assert url.master_url("10.0.0.9", 6379) == "redis://u:p%40ss@10.0.0.9:6379/3"
    assert parse("redis+sentinel://h1:26379/m").db == 0
    for bad in ("redis+sentinel://h1:26379", "redis+sentinel://h1/m/0",
                "redis+sentinel://h1:26379/m/x"):
        with pytest.raises(SettingsError, match=r"redis\+sentinel://HOST:PORT|not a number"):
            parse(bad)
    Settings(backplane="redis+sentinel://h1:26379/m/0")
    with pytest.raises(SettingsError, match=r"redis\+sentinel://"):
        Settings(backplane="sentinel://h1:26379/m/0")
