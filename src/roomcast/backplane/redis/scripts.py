"""The Lua scripts (package data under `lua/`), and how they run: EVALSHA with an EVAL
fallback, on connections of our own.

The stream scripts (publish, position, history) share `lua/lib.lua`, put in front of each
when it is loaded; every script is read once, at import.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from coredis.exceptions import NoScriptError

from roomcast.backplane.redis.wire import RespConnection

_LUA = resources.files(__package__).joinpath("lua")


class Script:
    """A Lua script's source and SHA1, for EVALSHA with an EVAL fallback."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest().encode()


def load(name: str, *, with_lib: bool = False, lib: str = "lib") -> Script:
    """The script `lua/<name>.lua`, with `lua/<lib>.lua` in front when `with_lib`."""
    try:
        source = _LUA.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        if with_lib:
            source = _LUA.joinpath(f"{lib}.lua").read_text(encoding="utf-8") + source
    except OSError as exc:
        raise RuntimeError(
            f"the Lua script {name}.lua is missing from the roomcast package ({exc}); "
            "reinstall roomcast") from exc
    return Script(name, source)


PUBLISH = load("publish", with_lib=True)
PUBLISH_MANY = load("publish_many", with_lib=True)
POSITION = load("position", with_lib=True)
HISTORY = load("history", with_lib=True)
OFFSETS = load("offsets")
FENCE = load("fence")
PRESENCE_SET = load("presence_set", with_lib=True, lib="events_lib")
PRESENCE_GET = load("presence_get")
HEARTBEAT = load("heartbeat")
REAP = load("reap")
REAP_ROOM = load("reap_room", with_lib=True, lib="events_lib")
REAP_USER = load("reap_user", with_lib=True, lib="events_lib")
USER_SET = load("user_set", with_lib=True, lib="events_lib")
EVENT_GONE = load("event_gone")
EVENT_SWEEP = load("event_sweep")
EVENT_CLAIM = load("event_claim")
DUE_ADD = load("due_add")
DUE_DROP = load("due_drop")
ALIVE = load("alive")
INDEX = load("index")
RENEW = load("renew")
CLUSTER = load("cluster")
REVOKE = load("revoke")
REVOCATIONS = load("revocations")
CONTROL = load("control")


async def evalsha(conn: RespConnection, script: Script, keys: list[str], args: list[Any],
                  timeout: float) -> Any:
    """EVALSHA on `conn` (requests pipeline on it); EVAL when Redis lacks the script
    (NOSCRIPT means it did not run, so running it again is safe)."""
    try:
        return await conn.create_request(b"EVALSHA", script.sha, len(keys), *keys, *args,
                                         timeout=timeout)
    except NoScriptError:
        return await conn.create_request(b"EVAL", script.source, len(keys), *keys, *args,
                                         timeout=timeout)
