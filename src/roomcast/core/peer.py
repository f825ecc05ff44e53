"""The routing core's record of one live connection: who it is and where it stands.

Pure data. `outlet` is the actor's handle for the connection (its mailbox and close);
the core stores it and never touches it.
"""

from __future__ import annotations

import secrets
from typing import Any

from roomcast.auth import Principal
from roomcast.limits import AbuseMeter, TokenBucket


class Peer:
    """One admitted connection as the core sees it."""

    __slots__ = (
        "abuse",
        "binary_frames",
        "bucket",
        "close_code",
        "connected_at",
        "grace",
        "hooked",
        "id",
        "last_seen",
        "outlet",
        "pongs_due",
        "principal",
        "remote",
        "remote_ip",
    )

    def __init__(self, principal: Principal, remote: str, remote_ip: str, now: float,
                 rate: float, burst: int) -> None:
        self.id = secrets.token_hex(6)
        self.principal = principal
        self.remote = remote
        self.remote_ip = remote_ip
        self.connected_at = now
        self.last_seen = now
        self.bucket = TokenBucket(rate, burst, now)
        self.abuse = AbuseMeter(burst)
        self.binary_frames = 0
        self.pongs_due = 0  # heartbeat pings sent and not yet answered (0 or 1)
        self.hooked = False  # admitted by the connect hook: the refresh hook extends it
        self.grace = 0.0  # seconds it may stay past its expiry (the refresh hook is failing)
        self.close_code: int | None = None  # set once the connection is closing
        self.outlet: Any = None

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def __repr__(self) -> str:
        return f"<Peer {self.id} {self.principal.user_id}>"
