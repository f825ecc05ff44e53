"""The routing core's state, and the small helpers every part of the core uses.

Who is connected (by id, user and address), who is subscribed where (the routing table),
each room's epoch as this node last heard it, and the clock's tie to Unix time.
"""

from __future__ import annotations

from typing import Any

from roomcast import protocol as p
from roomcast.auth import Authenticator, RevocationList
from roomcast.codes import ErrorCode
from roomcast.core.deadlines import Deadlines
from roomcast.core.effects import Send
from roomcast.core.peer import Peer
from roomcast.metrics import Metrics
from roomcast.permissions import room_matches
from roomcast.rooms import RoutingTable
from roomcast.settings import Settings
from roomcast.websocket import text_frame


class CoreState:
    """Everything the core decides with; changed only by the core's own methods."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.authenticator = Authenticator(settings)
        self.revocations = RevocationList()
        self.table: RoutingTable[Peer] = RoutingTable()
        self.peers: dict[str, Peer] = {}
        self.by_user: dict[str, set[Peer]] = {}
        self.by_ip: dict[str, int] = {}
        self.custom_types: set[str] = set()  # command types an embedding app registered
        # user -> rooms the application subscribed them to server-side (§12), so that any of
        # their connections (a reconnect included) may subscribe to them, patterns or not
        self.server_rooms: dict[str, set[str]] = {}
        self.wall_base = 0.0  # Unix time = wall_base + the actor's clock
        self.deadlines = Deadlines(settings)

    def wall(self, now: float) -> float:
        """Unix time at `now` on the actor's clock (so token expiry follows a test clock)."""
        return self.wall_base + now

    def hook_body(self, peer: Peer, **fields: Any) -> dict[str, Any]:
        """What every hook request about a connection says of it (§11)."""
        return {"user_id": peer.principal.user_id, "connection_id": peer.id,
                "info": peer.principal.info, **fields}

    @staticmethod
    def hooked(url: str | None, patterns: tuple[str, ...], room: str) -> bool:
        """Whether the hook at `url` decides for `room` (its patterns match)."""
        return bool(url) and p.valid_room(room) and room_matches(patterns, room)

    def reply(self, peer: Peer, frame: dict[str, Any]) -> Send:
        return Send(peer, text_frame(p.encode(frame)))

    def error(self, peer: Peer, code: ErrorCode | str, message: str,
              command_id: p.CommandId = None) -> Send:
        """An `error` frame; `code` a roomcast code or an application's own (from a hook,
        counted together in the metrics so their number stays bounded)."""
        self.metrics.errors[code if isinstance(code, ErrorCode) else "application"] += 1
        return Send(peer, text_frame(p.error_frame(code, message, command_id)))

    def readable(self, peer: Peer, room: str, command_id: p.CommandId) -> Send | None:
        """None when `peer` may read `room`; else the error to answer."""
        if not p.valid_room(room):
            return self.error(peer, ErrorCode.BAD_ROOM, p.bad_room_message(room), command_id)
        if not peer.principal.can_subscribe(room):
            return self.error(peer, ErrorCode.FORBIDDEN, f"not allowed to read {room}",
                              command_id)
        return None
