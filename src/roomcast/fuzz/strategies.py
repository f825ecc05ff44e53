"""The hypothesis strategies that draw examples: valid commands, mutated ones, odd ids and
numbers, raw text, invalid UTF-8, binary frames, deep or huge JSON, bursts."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from roomcast.fuzz.examples import (
    DROP,
    Big,
    Burst,
    ClientPing,
    Deep,
    Frame,
    Lit,
    Script,
    Text,
)

_EVENT_NAMES = st.sampled_from(["a", "b", "c.d", "task.created"])
_ODD_TEXT = st.sampled_from(["", "\u0000", "\u2028", "\U0001f600", "\\", '"', "é" * 31,
                             "é" * 32, "a" * 62, "a" * 63, "a" * 64, "a" * 65, "$me"])
_TEXT = st.text(max_size=12) | _ODD_TEXT
_ODD_NUMBERS = st.sampled_from([Lit(t) for t in (
    "1e400", "-1e400", "1E2", "1e-400", "123456789012345678901234567890", "-0", "1.0",
    "-0.0", "0e0", "1" + "0" * 62, "1" + "0" * 63, "1" + "0" * 64, "9223372036854775808",
)])
_SCALARS = (st.none() | st.booleans() | st.integers() | _TEXT | _ODD_NUMBERS
            | st.floats(allow_nan=False, allow_infinity=False))
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_DEEP = st.builds(Deep, st.sampled_from([3, 64, 255, 256, 500, 999, 1000, 2000, 10_000,
                                         100_000]), st.booleans())
_SMALL_DEEP = st.builds(Deep, st.sampled_from([3, 255, 256, 500, 999, 1000, 2000]),
                        st.booleans())
_BIG = st.builds(Big, st.sampled_from([-64, -1, 0, 1, 4096]), st.sampled_from(["x", "é", "€"]))
_ROOMS = st.sampled_from(
    ["fuzz:a"] * 4 + ["fuzz:b"] * 2
    + ["fuzz:c", "$ctl", "$me", "secret:1", "user:nobody", "", "bad room", "x" * 201, "é",
       "fuzz:*", "A" * 200, "@/.-_:", "fuzz:" + "z" * 195, "fuzz:" + "z" * 196]
)
def _weighted(*choices: tuple[int, Any]) -> Any:
    """one_of with integer weights (hypothesis merges repeats of one strategy in one_of, so
    each repeat is a distinct copy)."""
    return st.one_of(*[s.map(_same) for weight, s in choices for _ in range(weight)])


def _same(value: Any) -> Any:
    return value


_ODD_IDS = (st.just(DROP) | st.integers() | _ODD_NUMBERS | _TEXT | st.floats(allow_nan=False)
            | st.booleans() | st.none() | st.lists(st.integers(), max_size=2)
            | st.builds(Deep, st.sampled_from([2, 300])))
_IDS = _weighted((6, st.just("$id")), (1, _ODD_IDS))
_WHERE = (st.fixed_dictionaries({"k": st.sampled_from([1, "a", True, None, 1.0])})
          | st.dictionaries(st.sampled_from(["k", "n"]), _VALUES, max_size=2))
_SINCE = st.dictionaries(_ROOMS, st.fixed_dictionaries({
    "offset": st.integers(0, 8) | st.integers() | _ODD_NUMBERS,
    "epoch": st.just("$epoch") | _TEXT,
}), max_size=2)
_TOKENS = st.sampled_from(["$token:valid", "$token:other", "$token:badsig", "$token:expired",
                           "$token:none", "$token:garbage", ""])


def _command(kind: str, required: dict[str, Any], optional: dict[str, Any]) -> Any:
    return st.fixed_dictionaries(
        {"type": st.just(kind), "id": _IDS, **required}, optional=optional
    )


_COMMANDS = st.one_of(
    _command("subscribe", {"rooms": st.lists(_ROOMS, min_size=1, max_size=4)},
             {"events": st.none() | st.lists(_EVENT_NAMES, max_size=3), "where": _WHERE,
              "since": _SINCE, "presence": st.booleans()}),
    _command("unsubscribe", {"rooms": st.lists(_ROOMS, min_size=1, max_size=3)}, {}),
    _command("publish", {"room": _ROOMS},
             {"event": st.none() | _EVENT_NAMES, "data": _VALUES | _SMALL_DEEP,
              "idempotency_key": st.sampled_from(["k1", "k2"]) | _TEXT}),
    _command("publish", {"room": st.just("fuzz:a"), "data": _WHERE}, {"event": _EVENT_NAMES}),
    _command("history", {"room": _ROOMS},
             {"since": st.integers(0, 10) | st.integers() | _ODD_NUMBERS,
              "limit": st.integers(0, 1001) | st.sampled_from([1, 1000, 1001, 0])}),
    _command("presence", {"room": _ROOMS}, {}),
    _command("refresh", {"token": _TOKENS}, {}),
    _command("ping", {}, {"extra": _VALUES}),
)
_FIELDS = st.sampled_from(["type", "id", "rooms", "room", "events", "where", "since",
                           "presence", "event", "data", "idempotency_key", "limit", "token"])
_KINDS = st.sampled_from(["subscribe", "unsubscribe", "publish", "history", "presence",
                          "refresh", "ping", "Ping", "subscribed", "connected"])


@st.composite
def _mutated(draw: Any) -> Any:
    """A valid command with one to three things wrong with it."""
    command = dict(draw(_COMMANDS))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "set", "retype", "add", "wrap"]))
        keys = sorted(command)
        if op == "drop" and keys:
            del command[draw(st.sampled_from(keys))]
        elif op == "set" and keys:
            command[draw(st.sampled_from(keys))] = draw(_VALUES | _SMALL_DEEP)
        elif op == "retype":
            command["type"] = draw(_KINDS | _TEXT | _VALUES)
        elif op == "add":
            command[draw(_FIELDS | _TEXT)] = draw(_VALUES)
        else:
            return [command]
    return command


_RAW = st.one_of(
    st.builds(Text, st.text(max_size=40)),
    st.builds(Text, st.sampled_from([
        "NaN", "Infinity", "[1,]", "{'type':'ping'}", '\ufeff{"type":"ping"}',
        ' {"type":"ping","id":"ws"}\n', '{"type":"ping"} {"type":"ping"}',
        '{"type":"ping","id":"\\ud800"}', '{"type":"ping","id":"\\u0000"}',
        '{"type":"ping","id":1}\u0000', "", "{}", "[]", "null", '"ping"', '{"type":"ping",}',
        '{"type":"ping"', '{"type":"ping","id":01}', '{"type":"ping","id":-0}',
        '{"type":"ping","id":1e2}', '{"type":null}', '{"type":"ping","type":"ping"}',
    ])),
    _VALUES,
)
_BAD_BYTES = st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\x80",
                              b"\xf8\x88\x80\x80\x80", b"\xf4\x90\x80\x80", b"\xfe\xff"])
# The plain case, often: subscribing to and publishing into the shared rooms, so that the
# clients of one example deliver to each other (filters, offsets, presence get checked).
_JOIN = st.fixed_dictionaries(
    {"type": st.just("subscribe"), "id": st.just("$id"),
     "rooms": st.lists(st.sampled_from(["fuzz:a", "fuzz:b", "$ctl"]), min_size=1, max_size=2)},
    optional={"events": st.lists(_EVENT_NAMES, max_size=2), "where": _WHERE,
              "presence": st.booleans()},
)
_TRAFFIC = _JOIN | st.fixed_dictionaries(
    {"type": st.just("publish"), "id": st.just("$id"),
     "room": st.sampled_from(["fuzz:a", "fuzz:b"]),
     "data": _WHERE | _VALUES | st.fixed_dictionaries({"k": _ODD_NUMBERS | _SCALARS},
                                                      optional={"n": _VALUES})},
    optional={"event": _EVENT_NAMES},
)
# Frames that leave the connection open (most of them) ...
_SURVIVABLE = _weighted(
    (4, st.builds(Frame, _TRAFFIC, spaced=st.booleans(), ascii=st.booleans())),
    (1, st.builds(Frame, _TRAFFIC, fragments=st.integers(2, 4))),
    (2, st.builds(Frame, _COMMANDS, spaced=st.booleans(), ascii=st.booleans())),
    (2, st.builds(Frame, _mutated())),
    (1, st.builds(Frame, _RAW)),
    (1, st.builds(Frame, _COMMANDS, cut=st.floats(0, 1))),
    (1, st.builds(Frame, _SMALL_DEEP
                  | st.fixed_dictionaries({"type": st.just("ping"), "id": _SMALL_DEEP}))),
    (1, st.builds(ClientPing, st.binary(max_size=125))),
)
# ... and frames after which the server may (or must) close it.
_FATAL = st.one_of(
    st.builds(Frame, _COMMANDS, corrupt=_BAD_BYTES, cut=st.floats(0, 1)),
    st.builds(Frame, _COMMANDS | _RAW | _BIG, binary=st.just(True)),
    st.builds(Frame, st.fixed_dictionaries({"type": st.just("publish"), "id": st.just("$id"),
                                            "room": st.just("fuzz:a"), "data": _BIG})),
    st.builds(Frame, _DEEP),
    st.builds(Burst, st.integers(2, 100)),
)
_ACTIONS = _weighted((24, _SURVIVABLE), (1, _FATAL))


def example_strategy(clients: int = 3, actions: int = 12) -> Any:
    """The strategy for one example: 1..clients scripts of 1..actions actions each."""
    script = st.builds(
        Script,
        st.sampled_from(["full", "full", "narrow", "none"]),
        st.builds(lambda joins, rest: tuple(joins + rest),  # subscribe first, most often
                  st.lists(st.builds(Frame, _JOIN), max_size=2),
                  st.lists(_ACTIONS, min_size=1, max_size=actions)),
    )
    return st.lists(script, min_size=1, max_size=clients).map(tuple)

