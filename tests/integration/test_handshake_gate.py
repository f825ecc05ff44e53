"""A connect flood waits in the kernel's backlog: at most `max_handshakes` connections are
between accept and admission at once, and established connections keep being served."""

from __future__ import annotations

import trio

from tests.support import WAIT, connect, running_server


async def test_connections_past_max_handshakes_wait_until_one_is_decided() -> None:
    async with running_server(max_handshakes=2, handshake_timeout=1.5) as router, \
            connect(router, sub="resident") as resident:
        await resident.subscribe("room:1")
        port = router.ws_port
        assert port is not None
        order: list[str] = []
        async with trio.open_nursery() as nursery:
            # Two silent connections take both places: they send no request head.
            silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]

            async def latecomer() -> None:
                async with connect(router, sub="late"):
                    order.append("late admitted")

            nursery.start_soon(latecomer)
            # Meanwhile the established connection is served at once.
            for n in range(1, 6):
                await router.publish("room:1", {"n": n})
                with trio.fail_after(1.0):
                    assert (await resident.recv_type("message"))["offset"] == n
            assert order == []  # both places are still taken
            for stream in silent:
                with trio.fail_after(WAIT):
                    answer = await stream.receive_some(4096)
                assert answer.startswith(b"HTTP/1.1 400"), answer  # no head in time
                order.append("silent answered")
                await stream.aclose()
        assert order[0] == "silent answered" and "late admitted" in order
