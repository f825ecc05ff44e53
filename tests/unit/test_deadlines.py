"""Token expiry deadlines when the tie between the monotonic clock and Unix time moves
(the Router re-anchors it at every handshake and sweep on the system clock)."""

from __future__ import annotations

import jwt

from roomcast.auth import Authenticator
from roomcast.core.deadlines import Deadlines
from roomcast.core.peer import Peer
from roomcast.settings import Settings

SECRET = "deadline-secret-" + "d" * 40


def peer_expiring_at(exp: float) -> Peer:
    settings = Settings(jwt_secret=SECRET)
    token = jwt.encode({"sub": "alice", "exp": int(exp)}, SECRET, "HS256")
    principal = Authenticator(settings).verify(token, exp - 100)
    return Peer(principal, "r", "ip", 0.0, 20, 40)


def test_an_expiry_popped_early_after_a_re_anchor_is_kept_for_later() -> None:
    deadlines = Deadlines(Settings(jwt_secret=SECRET))
    peer = peer_expiring_at(1000)
    live = {peer.id: peer}
    deadlines.schedule(peer, 0.0, live)  # due at 1000 on the actor's clock
    # Unix time was re-anchored: the same Unix expiry is now 0.5 s later on the actor's clock
    assert deadlines.expired(1000.0, -0.5, live) == []
    assert deadlines.next_wake() <= 1000.5
    assert deadlines.expired(1000.5, -0.5, live) == [peer]


def test_compaction_keeps_the_newest_entry_of_each_live_connection() -> None:
    deadlines = Deadlines(Settings(jwt_secret=SECRET))
    peers = [peer_expiring_at(1000 + n) for n in range(10)]
    live = {p.id: p for p in peers}
    for base in (0.0, -0.25, -0.5) * 30:  # many re-schedules with a moving anchor
        for p in peers:
            deadlines.schedule(p, base, live)
    assert len(deadlines) <= 2 * len(live) + 64
    due = deadlines.expired(2000.0, -0.5, live)
    assert sorted(p.id for p in due) == sorted(live)
