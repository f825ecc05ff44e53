"""Time-driven behaviour on trio's MockClock(autojump_threshold=0): heartbeats, the rate
limit's token bucket, token expiry, history TTL and the idempotency window. No wall-clock
sleeps: `trio.sleep(90)` takes no real time, and every deadline is met exactly.

Why not real sockets: under an autojump clock the clock jumps whenever every task waits,
and a task waiting on the kernel for loopback bytes counts as waiting, so the clock can jump
past a deadline while bytes are in flight. Here the whole server — front door, handshake,
trio-websocket, connection actor, Router, memory backplane — runs over
trio.testing.memory_stream_pair(), where moving bytes is ordinary Trio scheduling: the
clock only jumps when the test really waits for time to pass.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
import trio_websocket
from wsproto.events import Ping

from roomcast import open_router
from roomcast.fuzz import Closed, RawClient
from roomcast.router import Router
from roomcast.server import handle_tcp
from tests.support import Client, make_token, server_settings

HOUR = 3600.0


@asynccontextmanager
async def serving(**overrides: Any) -> AsyncIterator[Router]:
    """A Router with its sweeper and backplane running, but no listening socket."""
    async with open_router(server_settings(**overrides)) as router:
        yield router


@asynccontextmanager
async def client(router: Router, token: str | None = None) -> AsyncIterator[Client]:
    """A trio-websocket client (it answers pings by itself) over an in-memory stream."""
    token = token or make_token("alice", rooms=["*"], publish=["*"])
    client_end, server_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handle_tcp, router, server_end)
        ws = await trio_websocket.wrap_client_stream(nursery, client_end, "127.0.0.1",
                                                     f"/ws?token={token}")
        c = Client(ws)
        c.connected = await c.recv()
        assert c.connected["type"] == "connected", c.connected
        try:
            yield c
        finally:
            await ws.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def mute_client(router: Router, token: str | None = None) -> AsyncIterator[RawClient]:
    """A client that never answers the server's pings (they are handed to the test)."""
    token = token or make_token("mute", rooms=["*"], publish=["*"])
    client_end, server_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handle_tcp, router, server_end)
        raw = RawClient(client_end)
        raw.answer_pings = False
        await raw.handshake("127.0.0.1", f"/ws?token={token}")
        hello = await raw.receive()
        assert isinstance(hello, str) and json.loads(hello)["type"] == "connected"
        try:
            yield raw
        finally:
            nursery.cancel_scope.cancel()


async def pings_until_closed(raw: RawClient, limit: float) -> tuple[list[float], Closed, float]:
    """The times the server's pings arrive, then the close and its time."""
    pings = []
    with trio.fail_after(limit):
        while True:
            got = await raw.receive()
            if isinstance(got, Ping):
                pings.append(trio.current_time())
            elif isinstance(got, Closed):
                return pings, got, trio.current_time()


# ---------------------------------------------------------------- heartbeats (§6)
async def test_a_silent_client_is_pinged_each_interval_then_closed_4408_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(heartbeat_interval=25, heartbeat_timeout=90) as router, \
            mute_client(router) as raw:
        start = trio.current_time()
        pings, closed, at = await pings_until_closed(raw, limit=HOUR)
    assert closed.code == 4408
    assert [t - start for t in pings] == [25.0, 50.0, 75.0]
    assert 90.0 < at - start <= 90.0 + 25.0


async def test_a_client_that_answers_pings_outlives_the_heartbeat_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(heartbeat_interval=25, heartbeat_timeout=90) as router, \
            client(router) as alice:
        await trio.sleep(10 * 90)
        assert (await alice.call({"type": "ping", "id": 1}))["type"] == "pong"
        assert len(router.conns) == 1


async def test_any_command_counts_as_a_sign_of_life(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(heartbeat_interval=25, heartbeat_timeout=90) as router, \
            mute_client(router) as raw:
        for n in range(10):  # one command a minute, no pongs: 600 s, well past the timeout
            await trio.sleep(60)
            await raw.send(0x1, json.dumps({"type": "ping", "id": n}).encode())
            while isinstance(got := await raw.receive(), Ping):
                pass
            assert isinstance(got, str) and json.loads(got)["id"] == n
        assert len(router.conns) == 1


async def test_pings_keep_their_interval_when_the_timeout_is_short(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(heartbeat_interval=25, heartbeat_timeout=30) as router, \
            mute_client(router) as raw:
        start, times = trio.current_time(), []
        with trio.fail_after(HOUR):
            while len(times) < 4:
                got = await raw.receive()
                if isinstance(got, Ping):  # answered by hand: a pong is a sign of life
                    times.append(trio.current_time() - start)
                    await raw.stream.send_all(raw.ws.send(got.response()))
        assert times == [25.0, 50.0, 75.0, 100.0]
        assert len(router.conns) == 1


async def test_fractional_heartbeat_settings_are_honoured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(heartbeat_interval=0.2, heartbeat_timeout=0.5) as router, \
            mute_client(router) as raw:
        start = trio.current_time()
        pings, closed, at = await pings_until_closed(raw, limit=10)
    assert closed.code == 4408
    assert 0.5 < at - start <= 0.5 + 0.2
    assert len(pings) == 2


# ---------------------------------------------------------------- the rate limit (§6)
async def pings(c: Client, count: int) -> list[str]:
    """Send `count` ping commands back to back; the reply types (or error codes) in order."""
    for n in range(count):
        await c.send({"type": "ping", "id": n})
    answers = []
    for _ in range(count):
        frame = await c.recv()
        answers.append(frame["code"] if frame["type"] == "error" else frame["type"])
    return answers


async def test_the_bucket_allows_a_burst_then_refills_at_the_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(rate_per_second=20, rate_burst=40) as router, client(router) as alice:
        assert await pings(alice, 41) == ["pong"] * 40 + ["rate_limited"]
        await trio.sleep(0.5)  # 10 tokens at 20 a second
        assert await pings(alice, 11) == ["pong"] * 10 + ["rate_limited"]
        await trio.sleep(60)  # never more than the burst
        assert await pings(alice, 41) == ["pong"] * 40 + ["rate_limited"]


async def test_more_rejections_than_the_burst_within_ten_seconds_close_4429(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(rate_per_second=20, rate_burst=40) as router, client(router) as alice:
        for n in range(40 + 41):
            await alice.send({"type": "ping", "id": n})
        code, _reason = await alice.closed()
    assert code == 4429


async def test_rejections_spread_thinner_than_the_abuse_window_do_not_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(rate_per_second=20, rate_burst=40) as router, client(router) as alice:
        for _ in range(30):  # 60 s: 4 rejections every 2 s, 20 in any 10 s (the limit is 40)
            answers = await pings(alice, 44)
            assert answers.count("rate_limited") == 4
            await trio.sleep(2)
        assert len(router.conns) == 1


# ---------------------------------------------------------------- token expiry (§4 refresh)
async def test_a_connection_closes_4401_when_its_token_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as router:
        token = make_token("alice", ttl=30)
        exp = json_claims(token)["exp"]
        async with client(router, token) as alice:
            code, _ = await alice.closed(timeout=HOUR)
            closed_at = router.wall()
    assert code == 4401
    assert exp <= closed_at < exp + 0.01


async def test_the_leeway_delays_the_expiry_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(jwt_leeway=5) as router:
        token = make_token("alice", ttl=30)
        exp = json_claims(token)["exp"]
        async with client(router, token) as alice:
            code, _ = await alice.closed(timeout=HOUR)
            closed_at = router.wall()
    assert code == 4401
    assert exp + 5 <= closed_at < exp + 5.01


async def test_a_refresh_moves_the_expiry_to_the_new_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as router:
        first = make_token("alice", ttl=30)
        async with client(router, first) as alice:
            await trio.sleep(20)
            second = make_token("alice", ttl=600)
            reply = await alice.call({"type": "refresh", "id": 1, "token": second})
            assert reply["type"] == "refreshed"
            await trio.sleep(60)  # past the first token's exp
            assert (await alice.call({"type": "ping", "id": 2}))["type"] == "pong"
            code, _ = await alice.closed(timeout=HOUR)
            closed_at = router.wall()
    assert code == 4401
    assert json_claims(second)["exp"] <= closed_at < json_claims(second)["exp"] + 0.01


def json_claims(token: str) -> dict[str, Any]:
    import jwt

    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


# ---------------------------------------------------------------- history TTL (§4, §10)
async def test_history_holds_a_message_for_history_ttl_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(history_ttl=30) as router, client(router) as alice:
        await alice.subscribe("project:1")  # watched: the room itself stays known
        published = await alice.publish("project:1", {"n": 1})
        await trio.sleep(29.9)
        page = await alice.call({"type": "history", "id": "h1", "room": "project:1"})
        assert [m["offset"] for m in page["messages"]] == [published["offset"]]
        await trio.sleep(0.1)
        page = await alice.call({"type": "history", "id": "h2", "room": "project:1"})
        assert page["messages"] == [] and page["offset"] == published["offset"]


async def test_a_since_older_than_history_ttl_reports_what_was_missed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(history_ttl=30) as router, client(router) as alice, \
            client(router, make_token("bob", rooms=["*"], publish=["*"])) as bob:
        reply = await alice.subscribe("project:1")
        epoch = reply["rooms"]["project:1"]["epoch"]
        for n in range(3):
            await alice.publish("project:1", {"n": n})
            await trio.sleep(20)  # messages at 0, 20 and 40 s; at 60 s only the last is held
        reply = await bob.call({"type": "subscribe", "id": "s", "rooms": ["project:1"],
                                "since": {"project:1": {"offset": 0, "epoch": epoch}}})
        entry = reply["rooms"]["project:1"]
        assert entry["recovered"] is False and entry["missed"] == {"from": 1, "to": 2}
        replayed = await bob.recv_type("message")
        assert replayed["offset"] == 3


async def test_a_subscribed_room_keeps_its_epoch_and_offsets_past_history_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(history_ttl=30) as router, client(router) as alice, \
            client(router, make_token("bob", rooms=["*"], publish=["*"])) as bob:
        epoch = (await bob.subscribe("project:1"))["rooms"]["project:1"]["epoch"]
        await alice.publish("project:1", {"n": 1})
        assert (await bob.recv_type("message"))["offset"] == 1
        await trio.sleep(10 * 30)  # many prune passes while nothing is held
        assert (await alice.publish("project:1", {"n": 2}))["offset"] == 2
        assert (await bob.recv_type("message"))["offset"] == 2  # not 1: no silent restart
        page = await alice.call({"type": "history", "id": "h", "room": "project:1"})
        assert page["epoch"] == epoch


async def test_a_room_nobody_watches_starts_a_new_epoch_after_history_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(history_ttl=30) as router, client(router) as alice:
        first = await alice.publish("project:1", {"n": 1})
        before = await alice.call({"type": "history", "id": "h1", "room": "project:1"})
        await trio.sleep(10 * 30)
        again = await alice.publish("project:1", {"n": 2})
        after = await alice.call({"type": "history", "id": "h2", "room": "project:1"})
        assert first["offset"] == again["offset"] == 1
        assert before["epoch"] != after["epoch"]


# ---------------------------------------------------------------- idempotency window (§4)
async def test_an_idempotency_key_repeats_within_the_window_and_not_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(idempotency_window=300, history_ttl=600) as router, \
            client(router) as alice:
        await alice.subscribe("project:1")
        first = await alice.publish("project:1", {"n": 1}, idempotency_key="k")
        await trio.sleep(299)
        repeat = await alice.publish("project:1", {"n": 1}, idempotency_key="k")
        assert repeat["offset"] == first["offset"] and repeat["duplicate"] is True
        await trio.sleep(1)
        later = await alice.publish("project:1", {"n": 1}, idempotency_key="k")
        assert later["offset"] == first["offset"] + 1 and "duplicate" not in later
