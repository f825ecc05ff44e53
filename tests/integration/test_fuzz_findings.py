"""What the live fuzzer found, pinned down one behaviour per test (real server, real sockets).

Each of these once closed a connection with 4500, dropped it without a close frame, or
answered with the wrong code; see docs/fuzzing.md.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from roomcast.codes import CloseCode
from roomcast.fuzz import Closed, RawClient
from roomcast.router import Router
from tests.support import WAIT, connect, make_token, running_server


@asynccontextmanager
async def raw_client(router: Router, sub: str = "fuzzed") -> AsyncIterator[RawClient]:
    """A wsproto client that can send frames a polite client never would."""
    stream = await trio.open_tcp_stream("127.0.0.1", router.ws_port or 0)
    client = RawClient(stream)
    with trio.fail_after(WAIT):
        await client.handshake(f"127.0.0.1:{router.ws_port}",
                               "/ws?token=" + make_token(sub, rooms=["*"], publish=["*"]))
        hello = await client.receive()
    assert isinstance(hello, str) and json.loads(hello)["type"] == "connected"
    try:
        yield client
    finally:
        await client.close(WAIT)


async def next_close(client: RawClient) -> Closed:
    with trio.fail_after(WAIT):
        while True:
            got = await client.receive()
            if isinstance(got, Closed):
                return got


async def test_deeply_nested_json_gets_an_error_reply_not_an_internal_close() -> None:
    async with running_server() as router, connect(router) as alice:
        reply = await alice.call({"type": "ping", "id": 1, "data": [[[]]]})
        assert reply["type"] == "pong"
        await alice.send('{"type":"ping","id":' + "[" * 5000 + "]" * 5000 + "}")
        error = await alice.recv_type("error")
        assert error["code"] == "bad_request" and error["id"] is None
        assert (await alice.call({"type": "ping", "id": 2}))["type"] == "pong"
    assert router.metrics.handler_errors == 0


async def test_a_text_frame_that_is_not_utf8_is_closed_with_1007_and_a_close_frame() -> None:
    async with running_server() as router, raw_client(router) as client:
        await client.raw_frame(0x1, b'{"type":"ping","id":"\xff"}')
        closed = await next_close(client)
        assert closed.code == CloseCode.INVALID_DATA


async def test_a_text_frame_over_the_limit_in_bytes_is_closed_1009_however_few_characters(
) -> None:
    async with running_server(max_message_bytes=1000) as router, raw_client(router) as client:
        frame = json.dumps({"type": "ping", "id": 1, "pad": "€" * 400}, ensure_ascii=False)
        assert len(frame) < 1000 < len(frame.encode())
        await client.raw_frame(0x1, frame.encode())
        closed = await next_close(client)
        assert closed.code == CloseCode.TOO_BIG


async def test_a_frame_at_exactly_the_limit_in_bytes_is_answered() -> None:
    async with running_server(max_message_bytes=1000) as router, raw_client(router) as client:
        frame = json.dumps({"type": "ping", "id": 1, "pad": ""}).encode()
        frame = frame.replace(b'"pad": ""', b'"pad": "' + b"x" * (1000 - len(frame)) + b'"')
        assert len(frame) == 1000
        await client.raw_frame(0x1, frame)
        with trio.fail_after(WAIT):
            reply = await client.receive()
        assert isinstance(reply, str) and json.loads(reply)["type"] == "pong"


async def test_a_number_beyond_a_double_in_data_still_reaches_filtered_subscribers() -> None:
    async with (running_server() as router, connect(router, sub="alice") as alice,
                connect(router, sub="bob") as bob):
        await alice.subscribe("fuzz:a", where={"k": 1})
        await bob.send('{"type":"publish","id":"p","room":"fuzz:a","data":{"k":1,"big":1e400}}')
        published = await bob.recv_type("published")
        message = await alice.recv_type("message")
        assert message["offset"] == published["offset"]
        assert message["data"]["k"] == 1
    assert router.metrics.handler_errors == 0


async def test_data_nested_too_deep_to_filter_is_not_delivered_through_a_where_filter() -> None:
    async with (running_server() as router, connect(router, sub="alice") as alice,
                connect(router, sub="bob") as bob):
        await alice.subscribe("fuzz:a", where={"k": 1})
        await alice.subscribe("fuzz:b")
        # Deep enough that parsing the publish succeeds but decoding it again, deeper in the
        # stack where the filter runs, might not: the publish must still be answered.
        for depth in (900, 950, 990, 995):
            deep = "[" * depth + "]" * depth
            await bob.send(f'{{"type":"publish","id":{depth},"room":"fuzz:a","data":{deep}}}')
            reply = await bob.recv()
            assert reply["id"] in (depth, None) and reply["type"] in ("published", "error")
        await bob.publish("fuzz:b", {"after": True})
        message = await alice.recv_type("message")
        assert message["room"] == "fuzz:b"  # nothing from fuzz:a passed the filter
    assert router.metrics.handler_errors == 0


async def test_history_since_beyond_every_offset_is_an_empty_page() -> None:
    async with running_server() as router, connect(router) as alice:
        await alice.publish("fuzz:a", {"n": 1})
        await alice.send('{"type":"history","id":"h","room":"fuzz:a",'
                         '"since":123456789012345678901234567890}')
        reply = await alice.recv_type("history")
        assert reply["messages"] == [] and reply["offset"] == 1


async def test_truncated_json_is_bad_json_even_when_it_starts_as_an_array() -> None:
    async with running_server() as router, connect(router) as alice:
        for text in ("[1,", "\t3\u0099", '{"type":"subscribe","id":1e400,"rooms":['):
            await alice.send(text)
            error = await alice.recv_type("error")
            assert error["code"] == "bad_json", text


async def test_valid_json_that_is_not_an_object_is_bad_request() -> None:
    async with running_server() as router, connect(router) as alice:
        for text in ("[1, 2]", "1e400", '"ping"'):
            await alice.send(text)
            error = await alice.recv_type("error")
            assert error["code"] == "bad_request", text


async def test_pings_that_arrive_while_the_server_closes_are_not_a_connection_failure() -> None:
    async with running_server(max_binary_frames=1) as router:
        for _ in range(20):
            async with raw_client(router) as client:
                # the second binary frame closes with 4400; the pings land on a closing socket
                await client.raw_frame(0x2, b"x")
                await client.raw_frame(0x2, b"x")
                for _ in range(3):
                    await client.raw_frame(0x9, b"")
                closed = await next_close(client)
                # ABNORMAL when the server's socket closed with our pings unread (a TCP reset)
                assert closed.code in (CloseCode.PROTOCOL_VIOLATION, CloseCode.ABNORMAL)
        with trio.fail_after(WAIT):
            await router.wait_drained()
    assert router.metrics.handler_errors == 0
