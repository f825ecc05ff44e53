"""The Lua scripts keep history exactly as the in-memory RoomLog does (history.py, protocol
§4): the same operations, driven by hypothesis against a real redis-server and the
model, give the same offsets, duplicates, recoveries, missed ranges and history pages."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from roomcast import open_router
from roomcast import protocol as p
from roomcast.history import RoomLog
from tests.cluster.conftest import RedisServer
from tests.support import server_settings

_publish = st.tuples(st.just("publish"), st.sampled_from([None, "k1", "k2", "k3"]))
_since = st.tuples(st.just("since"), st.integers(-1, 14), st.booleans())
_history = st.tuples(st.just("history"), st.one_of(st.none(), st.integers(0, 25)),
                     st.integers(1, 12))
# Mostly publishes in runs, so history fills past history_size before the reads.
_ops = st.lists(st.one_of(st.lists(_publish, min_size=1, max_size=8), st.tuples(_since),
                          st.tuples(_history)), max_size=12).map(
    lambda groups: [op for group in groups for op in group])
_TRIMMED = [("publish", None)] * 7 + [("since", 1, True), ("since", 0, True),
                                      ("since", 4, True), ("history", 1, 3), ("history", None, 9)]


def offsets(payloads: list[bytes]) -> list[int]:
    return [json.loads(m)["offset"] for m in payloads]


@settings(max_examples=100, deadline=None)
@given(ops=_ops, size=st.integers(0, 6))
@example(ops=_TRIMMED, size=2)
@example(ops=_TRIMMED, size=0)
@example(ops=[("publish", "k1"), ("publish", "k1"), ("publish", "k2"), ("since", 2, True),
              ("since", 3, True), ("since", 2, False), ("history", None, 1)], size=6)
async def test_redis_history_behaves_like_the_in_memory_room_log(
    redis: RedisServer, ops: list[tuple[Any, ...]], size: int
) -> None:
    room = f"model-{time.monotonic_ns()}"
    model = RoomLog(size, 300.0, "e-model", 0.0)
    config = server_settings(backplane=redis.url, node="model", history_size=size)
    async with open_router(config) as router:
        backplane = router.backplane
        epoch = (await backplane.position(room)).epoch
        for n, op in enumerate(ops):
            if op[0] == "publish":
                template = p.message_template(room, b'{"n":%d}' % n, None, None, time.time())
                got = await backplane.publish(room, template, None, op[1])
                want = model.append(0.0, template.build, op[1])
                assert (got.offset, got.duplicate) == (want.offset, want.duplicate), op
            elif op[0] == "since":
                _, offset, same = op
                pos = await backplane.position(room, (offset, epoch if same else "e-other"))
                rec = model.since(offset, "e-model" if same else "e-other", 0.0)
                assert (pos.recovered, pos.missed) == (rec.recovered, rec.missed), op
                assert [o for o, _ in pos.messages] == [e.offset for e in rec.messages], op
                assert offsets([m for _, m in pos.messages]) == [e.offset for e in rec.messages]
                assert pos.offset == model.offset and pos.epoch == epoch
            else:
                _, since, limit = op
                page = await backplane.history(room, since, limit)
                want_entries = model.history(since, limit, 0.0)
                assert offsets(page.messages) == [e.offset for e in want_entries], op
                assert page.offset == model.offset
