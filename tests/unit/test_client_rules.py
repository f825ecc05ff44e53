"""roomcast.client.rules, the decisions both client shells (Trio and asyncio) share: what
to do after each close code, when to refresh a token, the `connected` frame, the command
frames and the replies."""

from __future__ import annotations

import json
import time

import jwt
from hypothesis import given
from hypothesis import strategies as st

from roomcast.client import DEAD_LINK, STOP_CODES, Direct, Joined, Left, Position
from roomcast.client.rules import (
    Next,
    after_close,
    notice,
    publish_frame,
    read_hello,
    read_published,
    refresh_wait,
    subscribe_frame,
)
from roomcast.client.session import NO_FILTERS, Filters
from roomcast.codes import CloseCode


@given(st.integers(1000, 4999), st.booleans())
def test_only_the_stop_codes_stop_and_4401_asks_a_token_function(code: int,
                                                                  function: bool) -> None:
    decision = after_close(code, function)
    if code == CloseCode.UNAUTHORIZED and function:
        assert decision == Next.ASK_TOKEN
    elif code in STOP_CODES:
        assert decision == Next.STOP
    else:
        assert decision == Next.RETRY


def test_the_codes_of_the_table() -> None:
    retry = (CloseCode.GOING_AWAY, CloseCode.ABNORMAL, CloseCode.TOO_MANY, DEAD_LINK, 4409,
             4408, 1013, 4500)
    assert {after_close(c, True) for c in retry} == {Next.RETRY}
    assert after_close(CloseCode.UNAUTHORIZED, False) == Next.STOP
    assert after_close(CloseCode.FORBIDDEN, True) == Next.STOP


def token(exp: float) -> str:
    return jwt.encode({"sub": "a", "exp": int(exp)}, "k" * 32, algorithm="HS256")


@given(life=st.integers(1, 100_000), before=st.floats(0, 600), skew=st.integers(-60, 60))
def test_a_refresh_comes_before_exp_by_at_most_a_quarter_of_the_life(
        life: int, before: float, skew: int) -> None:
    now = 1_700_000_000.0
    wait = refresh_wait(token(now + life), now + skew, before)
    assert wait is not None
    remaining = life - skew
    assert 0 <= wait <= max(remaining, 0)
    if remaining > 0:
        assert remaining - wait <= min(before, remaining / 4) + 1e-6


def test_a_token_without_exp_is_never_refreshed() -> None:
    assert refresh_wait("not-a-jwt", time.time(), 30) is None


def test_the_connected_frame_gives_the_clock_skew() -> None:
    hello = read_hello(json.dumps({"type": "connected", "server_time": "2026-01-01T00:00:10Z"}),
                       1767225600.0)
    assert hello is not None and hello.skew == 10.0 and hello.connection["type"] == "connected"
    assert read_hello("{}", 0) is None and read_hello("nope", 0) is None
    assert read_hello('{"type": "connected"}', 0) is not None


def test_command_frames_and_replies() -> None:
    presence = Filters.make(["a"], {"k": 1}, True)
    assert subscribe_frame(3, ["r"], presence, {"r": Position(4, "e")}) == {
        "type": "subscribe", "id": 3, "rooms": ["r"], "events": ["a"], "where": {"k": 1},
        "presence": True, "since": {"r": {"offset": 4, "epoch": "e"}}}
    assert subscribe_frame(1, ["r"], NO_FILTERS, {}) == {"type": "subscribe", "id": 1,
                                                         "rooms": ["r"]}
    assert publish_frame("r", 1, None, "k") == {"type": "publish", "room": "r", "data": 1,
                                                "idempotency_key": "k"}
    result = read_published("r", {"offset": 5, "epoch": "e", "duplicate": True})
    assert (result.offset, result.epoch, result.duplicate) == (5, "e", True)


def test_presence_and_direct_frames_become_events() -> None:
    assert notice({"type": "joined", "room": "r", "user_id": "u", "info": {"a": 1}}) == \
        Joined("r", "u", {"a": 1})
    assert notice({"type": "left", "room": "r", "user_id": "u"}) == Left("r", "u")
    assert notice({"type": "direct", "event": "e", "data": 2, "ts": "t"}) == Direct("e", 2, "t")
    assert notice({"type": "message"}) is None


def test_inbound_frames_tell_the_shell_what_to_do() -> None:
    from roomcast.client import Message, Reset
    from roomcast.client.rules import inbound
    from roomcast.client.session import Session

    book = Session()
    server = {"type": "subscribed", "server": True,
              "rooms": {"r": {"ok": True, "offset": 2, "epoch": "e"}}}
    assert inbound(book, server).events == [] and book.subs == {"r": NO_FILTERS}
    message = {"type": "message", "room": "r", "offset": 3, "data": 1, "ts": "t"}
    assert [type(e) for e in inbound(book, message).events] == [Message]
    assert inbound(book, message).events == []  # a duplicate
    reset = inbound(book, {"type": "reset", "room": "r", "epoch": "e2", "offset": 0})
    assert reset.events == [Reset("r", "e2", 0, None, Position(3, "e"))]
    assert inbound(book, {"type": "reset", "room": "r"}).warning is not None
    book.sent_subscribe(5, ["x"], {})
    refused = inbound(book, {"type": "error", "id": 5, "code": "forbidden", "message": "no"})
    assert refused.refused == ["x"] and refused.error is not None
    assert refused.error.code == "forbidden"
    pong = {"type": "pong", "id": 9}
    assert inbound(book, pong).reply == pong
    assert inbound(book, {"type": "unsubscribed", "server": True, "rooms": ["r"]}).reply is None
    assert book.subs == {}
