"""The Redis backplane: several roomcast processes act as one (protocol §9).

`backplane` holds RedisBackplane (connections, the Backplane API), `reader` the pub/sub
side (gap filling, catch-up), `presence` presence and the heartbeat, `keys` the key layout,
`scripts` the Lua scripts (files under `lua/`, package data) and how they run.
"""

from __future__ import annotations

from roomcast.backplane.redis.backplane import RedisBackplane

__all__ = ["RedisBackplane"]
