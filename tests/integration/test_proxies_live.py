"""trusted_proxies over real sockets (protocol §14): the client's address that
max_connections_per_ip counts comes from a trusted proxy's headers, and only from one."""

from __future__ import annotations

import trio
import trio_websocket

from roomcast.codes import CloseCode
from roomcast.router import Router
from tests.support import WAIT, connect, make_token, running_server, ws_url


async def first_close(router: Router, headers: list[tuple[str, str]]) -> int | None:
    """A handshake that succeeds, then the close code that comes before any data frame."""
    async with trio_websocket.open_websocket_url(
        ws_url(router, make_token("late")), extra_headers=headers, connect_timeout=WAIT,
        disconnect_timeout=WAIT,
    ) as ws:
        with trio.fail_after(WAIT):
            try:
                frame = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                return exc.reason.code
    raise AssertionError(f"got a data frame before the close: {frame!r}")


def forwarded(address: str) -> list[tuple[str, str]]:
    return [("X-Forwarded-For", address)]


async def test_forged_forwarded_headers_from_an_untrusted_peer_are_ignored() -> None:
    async with running_server(max_connections_per_ip=1) as router, connect(
            router, sub="a", headers=forwarded("203.0.113.1")):
        assert dict(router.core.by_ip) == {"127.0.0.1": 1}  # the TCP peer, not the header
        assert await first_close(router, forwarded("203.0.113.2")) == CloseCode.TRY_AGAIN_LATER
        headers = [("Forwarded", "for=198.51.100.9")]
        assert await first_close(router, headers) == CloseCode.TRY_AGAIN_LATER


async def test_clients_behind_a_trusted_proxy_are_counted_separately() -> None:
    async with running_server(max_connections_per_ip=1, trusted_proxies=("127.0.0.1",)
                              ) as router, connect(
            router, sub="a", headers=forwarded("203.0.113.1")), connect(
            router, sub="b", headers=forwarded("6.6.6.6, 203.0.113.2")), connect(
            router, sub="c", headers=[("Forwarded", 'for="[2001:db8::7]:4711"')]):
        assert dict(router.core.by_ip) == {"203.0.113.1": 1, "203.0.113.2": 1,
                                           "2001:db8::7": 1}
        remotes = sorted(peer.remote for peer in router.conns.values())
        assert remotes[0].startswith("2001:db8::7 via 127.0.0.1:")
        assert remotes[1].startswith("203.0.113.1 via 127.0.0.1:")
        # The same client again is over its limit, whatever the client put left of it.
        headers = forwarded("203.0.113.2, 203.0.113.1")
        assert await first_close(router, headers) == CloseCode.TRY_AGAIN_LATER
        # Without a forwarded address the proxy itself is the client.
        async with connect(router, sub="d"):
            assert router.core.by_ip["127.0.0.1"] == 1


async def test_a_trusted_range_is_walked_to_the_first_untrusted_address() -> None:
    async with running_server(max_connections_per_ip=1,
                              trusted_proxies=("127.0.0.0/8", "10.0.0.0/8")) as router:
        chain = "203.0.113.9, 198.51.100.4, 10.2.3.4, 10.0.0.1"
        async with connect(router, sub="a", headers=forwarded(chain)):
            assert dict(router.core.by_ip) == {"198.51.100.4": 1}
