"""Memory stays bounded under floods: history per room, idempotency keys, presence, rooms.

The floods go through the real publish path (sockets where a client is involved); the
bounds are then read from the memory backplane's HistoryStore and the Router's tables.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import trio

from roomcast import Settings, open_router
from roomcast.backplane.memory import MemoryBackplane
from roomcast.history import RoomLog
from roomcast.router import Router
from tests.support import SECRET, WAIT, connect, make_token, running_server

FAST = {"rate_per_second": 100_000, "rate_burst": 100_000}


def room_log(router: Router, room: str) -> RoomLog:
    backplane = router.backplane
    assert isinstance(backplane, MemoryBackplane)
    log = backplane.store.get(room)
    assert log is not None, f"{room} is not known to the history store"
    return log


async def flood(router: Router, room: str, publishers: int, each: int,
                key: str | None = None) -> dict[str, int]:
    """Publish publishers * each messages from concurrent clients; returns key -> offset
    when `key` is given (the idempotency keys are f"{key}-{publisher}-{n}")."""
    offsets: dict[str, int] = {}

    async def publish_many(i: int) -> None:
        async with connect(router, sub=f"flooder{i}") as client:
            for n in range(each):
                extra: dict[str, Any] = {}
                if key is not None:
                    extra["idempotency_key"] = f"{key}-{i}-{n}"
                reply = await client.publish(room, {"i": i, "n": n, "pad": "x" * 100}, **extra)
                assert reply["type"] == "published", reply
                if key is not None:
                    offsets[extra["idempotency_key"]] = reply["offset"]

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(publishers):
                nursery.start_soon(publish_many, i)
    return offsets


async def test_history_per_room_stays_at_history_size_under_a_flood() -> None:
    async with running_server(history_size=10, **FAST) as router, connect(router) as reader:
        await flood(router, "room:flood", publishers=4, each=250)
        log = room_log(router, "room:flood")
        assert log.offset == 1000
        held = log.history(0, 1000, trio.current_time())
        assert [e.offset for e in held] == list(range(991, 1001))
        reply = await reader.call({"type": "history", "id": 1, "room": "room:flood",
                                   "since": 0, "limit": 1000})
        assert [m["offset"] for m in reply["messages"]] == list(range(991, 1001))


async def test_idempotency_keys_per_room_stay_at_idempotency_max_keys() -> None:
    async with running_server(idempotency_max_keys=20, **FAST) as router, \
            connect(router) as alice:
        offsets = await flood(router, "room:keys", publishers=2, each=250, key="k")
        log = room_log(router, "room:keys")
        assert len(log._keys) == 20  # the bound itself (no public accessor)
        by_offset = sorted(offsets, key=offsets.__getitem__)
        newest, evicted = by_offset[-1], by_offset[-21]
        again = await alice.publish("room:keys", "retry", idempotency_key=newest)
        assert again["duplicate"] is True and again["offset"] == offsets[newest]
        forgotten = await alice.publish("room:keys", "retry", idempotency_key=evicted)
        assert "duplicate" not in forgotten and forgotten["offset"] == 501
        assert len(log._keys) == 20


async def test_connect_disconnect_cycles_leave_no_presence_or_routing_entries() -> None:
    workers, cycles = 10, 100
    async with running_server(max_connections_per_user=workers) as router, \
            connect(router, sub="observer") as observer:

        async def churn(i: int) -> None:
            for n in range(cycles):
                async with connect(router, sub=f"user{i % 3}") as client:
                    reply = await client.subscribe("room:shared", f"room:{i}-{n}",
                                                   presence=True)
                    assert reply["rooms"]["room:shared"]["ok"] is True

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for i in range(workers):
                    nursery.start_soon(churn, i)
        with trio.fail_after(WAIT):  # the server forgets closed connections on its own time
            while True:
                if list(router.conns.values()) == [c for c in router.conns.values()
                                                   if c.principal.user_id == "observer"]:
                    break
                await trio.sleep(0.02)
        presence = await observer.call({"type": "presence", "id": 1, "room": "room:shared"})
        assert presence["users"] == []
        assert router.core.table.rooms == {} and router.core.table.present == {}
        assert router.core.table.by_subscriber == {}
        assert set(router.core.by_user) == {"observer"} and sum(router.core.by_ip.values()) == 1
        backplane = router.backplane
        assert isinstance(backplane, MemoryBackplane)
        assert backplane._presence == {}  # no per-room leftovers in the backplane either
        # token-expiry entries of closed connections are dropped, not kept until their exp
        assert len(router.core.deadlines) < 100


async def test_many_rooms_published_once_are_forgotten_after_history_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ttl = 30.0
    settings = Settings(jwt_secret=SECRET, history_ttl=ttl, node="test")
    async with open_router(settings) as router:
        backplane = router.backplane
        assert isinstance(backplane, MemoryBackplane)
        for i in range(5000):
            await router.publish(f"room:{i}", {"n": i})
        assert len(backplane.store) == 5000
        await trio.sleep(ttl / 2)
        assert len(backplane.store) == 5000  # not before their time
        await trio.sleep(ttl * 2)  # the backplane's own pruning, on the mock clock
        assert len(backplane.store) == 0
        assert await router.publish("room:1", "again") == 1  # a fresh stream


async def test_memory_stops_growing_once_every_rooms_history_is_full() -> None:
    rooms, size = 200, 50
    data = {"text": "x" * 130}
    settings = Settings(jwt_secret=SECRET, history_size=size, history_ttl=3600, node="test")
    async with open_router(settings) as router:
        await router.publish("warm:up", data)
        started_here = not tracemalloc.is_tracing()
        if started_here:
            tracemalloc.start()
        try:
            gc.collect()
            empty, _ = tracemalloc.get_traced_memory()
            for _ in range(size):
                for r in range(rooms):
                    await router.publish(f"room:{r}", data, event="chat.message")
            gc.collect()
            full, _ = tracemalloc.get_traced_memory()
            for _ in range(2 * size):
                for r in range(rooms):
                    await router.publish(f"room:{r}", data, event="chat.message")
            gc.collect()
            later, _ = tracemalloc.get_traced_memory()
        finally:
            if started_here:
                tracemalloc.stop()
        frame = room_log(router, "room:0").history(None, 1, trio.current_time())[0].payload
    per_message = (full - empty) / (rooms * size)
    assert per_message > len(frame)  # the stored frames are really in there
    assert later - full < 0.05 * (full - empty), (empty, full, later)


async def test_a_flood_of_refreshes_keeps_one_expiry_entry_per_connection() -> None:
    async with running_server(**FAST) as router, connect(router) as alice:
        token = make_token("alice", rooms=["*"], publish=["*"])  # the same exp every time
        for i in range(300):
            reply = await alice.call({"type": "refresh", "id": i, "token": token})
            assert reply["type"] == "refreshed", reply
        assert len(router.core.deadlines) < 100  # not one entry per refresh
