"""The refresh hook's rules in the routing core (contract §11), on a clock the test moves:
asked shortly before expires_at, extended by a later one, closed 4401 after a refusal,
kept open while the backend fails — asked again every 5 s — for at most 60 s, then 1013."""

from __future__ import annotations

import math

from roomcast.codes import CloseCode
from roomcast.core import CallHook, Close, RoutingCore
from roomcast.core.effects import Effects
from roomcast.hookwire import Allowed, Denied, Failed
from roomcast.permissions import Principal
from roomcast.settings import Settings

SETTINGS = Settings(connect_hook_url="http://127.0.0.1:1/h",
                    refresh_hook_url="http://127.0.0.1:1/h", hook_timeout=3,
                    heartbeat_interval=1000, heartbeat_timeout=3000)  # no heartbeat in the way


def hooked_connection(expires_at: float) -> tuple[RoutingCore, object]:
    core = RoutingCore(SETTINGS)
    core.wall_base = 0.0  # Unix time = the test's clock
    principal = Principal(user_id="u", rooms=(), publish=(), info={}, expires_at=expires_at,
                          jti=None)
    peer, _ = core.admit(principal, "r", "ip", 0.0, hooked=True)
    return core, peer


def hooks_in(effects: Effects) -> list[CallHook]:
    return [e for e in effects if isinstance(e, CallHook)]


def closes_in(effects: Effects) -> list[tuple[int, str]]:
    return [(e.code, e.reason) for e in effects if isinstance(e, Close)]


def test_it_is_asked_hook_timeout_plus_one_second_before_expires_at() -> None:
    core, _ = hooked_connection(100.0)
    assert core.deadlines.next_wake() <= 96.0
    assert hooks_in(core.tick(95.9)) == []
    (ask,) = hooks_in(core.tick(96.0))
    assert ask.name == "refresh" and ask.body["user_id"] == "u"


def test_a_later_expires_at_extends_it() -> None:
    core, _ = hooked_connection(100.0)
    (ask,) = hooks_in(core.tick(96.0))
    ask.then(Allowed({"expires_at": 200.0}))
    assert closes_in(core.tick(150.0)) == []
    assert core.deadlines.next_wake() <= 196.0
    assert hooks_in(core.tick(196.0))


def test_a_refusal_or_an_expires_at_in_the_past_closes_4401_at_expires_at() -> None:
    for answer in (Denied("nope", "no"), Allowed({"expires_at": 50.0}), Allowed({})):
        core, _ = hooked_connection(100.0)
        (ask,) = hooks_in(core.tick(96.0))
        ask.then(answer)
        assert closes_in(core.tick(99.9)) == []
        assert closes_in(core.tick(100.0)) == [(CloseCode.UNAUTHORIZED, "token expired")]


def test_a_failing_backend_keeps_it_open_60_s_asking_every_5_then_1013() -> None:
    core, _ = hooked_connection(100.0)
    (ask,) = hooks_in(core.tick(96.0))
    ask.then(Failed("down"))
    now, asks = 96.0, 1
    while True:
        now += 1.0
        effects = core.tick(now)
        for again in hooks_in(effects):
            asks += 1
            again.then(Failed("down"))
        if closes_in(effects):
            break
        assert now < 170, "never closed"
    assert closes_in(effects) == [(CloseCode.TRY_AGAIN_LATER, "auth backend unavailable")]
    assert now == 160.0 and asks == math.ceil((160 - 96) / 5)


def test_a_connection_with_a_token_is_never_asked() -> None:
    core = RoutingCore(SETTINGS)
    principal = Principal(user_id="t", rooms=(), publish=(), info={}, expires_at=100.0,
                          jti=None)
    core.admit(principal, "r", "ip", 0.0)  # not hooked: a token's exp is final
    assert hooks_in(core.tick(99.0)) == []
    assert closes_in(core.tick(100.0)) == [(CloseCode.UNAUTHORIZED, "token expired")]
