"""The routing core's decisions on the application's behalf: server-side subscriptions
(§12), the refresh hook's schedule and answers, the rpc hook's and an embedded command
handler's replies (§11). Pure, like the rest of the core.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import msgspec

from roomcast import protocol as p
from roomcast.codes import ErrorCode
from roomcast.core.effects import NOTHING, Effect, Effects
from roomcast.core.peer import Peer
from roomcast.core.subscribe import Subscriptions
from roomcast.hookwire import Allowed, Denied, Failed, Outcome, error_code

MAX_SERVER_ROOM_USERS = 100_000  # users whose server-side rooms are remembered (§12)
REFRESH_GRACE = 60.0  # seconds past expires_at while the refresh hook fails (§11)
REFRESH_RETRY = 5.0  # seconds between refresh asks while it fails


class ApplicationSide(Subscriptions):
    """What the application decides, or asks roomcast to do, applied to the routing state."""

    def _server_side(self, kind: str, payload: dict[str, Any]) -> Effects:
        """§12: the application moves a user's live connections (or one of them) in or out
        of a room, whatever their patterns say."""
        user, room = str(payload.get("user_id")), str(payload.get("room"))
        connection_id = payload.get("connection_id")
        if not p.valid_room(room):
            return NOTHING
        peers = [peer for peer in self.by_user.get(user, ())
                 if connection_id is None or peer.id == connection_id]
        if connection_id is None:
            self._remember_server_room(user, room, kind == "subscribe")
        effects: list[Effect] = []
        for peer in peers:
            if kind == "subscribe":
                effects += self.subscribe(peer, p.Subscribe(rooms=[room]), server=True)
            else:
                effects += self.server_unsubscribe(peer, room)
        return effects

    def _remember_server_room(self, user: str, room: str, subscribed: bool) -> None:
        """Rooms a user was subscribed to server-side stay allowed to any of its
        connections (a reconnect resumes them). Bounded: rooms per user by
        max_subscriptions, users by MAX_SERVER_ROOM_USERS (the least recently changed go)."""
        rooms = self.server_rooms.pop(user, set())
        if subscribed and len(rooms) < self.settings.max_subscriptions:
            rooms.add(room)
        elif not subscribed:
            rooms.discard(room)
        if rooms:
            self.server_rooms[user] = rooms  # the most recently changed last
            while len(self.server_rooms) > MAX_SERVER_ROOM_USERS:
                del self.server_rooms[next(iter(self.server_rooms))]

    def claimed(self, peer: Peer) -> Effects:
        """Right after `connected`: the rooms the token's `subscribe` claim names (§12),
        subscribed server-side."""
        rooms = list(dict.fromkeys(peer.principal.subscribe))
        if not rooms:
            return NOTHING
        return self.subscribe(peer, p.Subscribe(rooms=rooms), server=True)

    def _plan_refresh(self, peer: Peer) -> None:
        """Ask the refresh hook shortly before the connection's expires_at: never more than
        hook_timeout + 1 s before it."""
        s = self.settings
        if peer.hooked and s.refresh_hook_url and math.isfinite(peer.principal.expires_at):
            lead = s.hook_timeout + 1
            self.deadlines.refresh_at(peer, peer.principal.expires_at - lead - self.wall_base)

    def _refreshed(self, peer: Peer, asked: float, outcome: Outcome) -> Effects:
        """The refresh hook's answer: a later expires_at extends the connection (and may
        bring a new info); a refusal lets it close 4401 at expires_at; a failure keeps it
        open (asked again every REFRESH_RETRY s) for at most REFRESH_GRACE s past it."""
        if self.peers.get(peer.id) is not peer or peer.closing:
            return NOTHING
        if isinstance(outcome, Failed):
            peer.grace = REFRESH_GRACE
            self.deadlines.schedule(peer, self.wall_base, self.peers)
            self.deadlines.refresh_at(peer, asked + REFRESH_RETRY)
            return NOTHING
        peer.grace = 0.0
        result = outcome.result if isinstance(outcome, Allowed) else {}
        expires_at = result.get("expires_at")
        if (isinstance(expires_at, int | float) and not isinstance(expires_at, bool)
                and expires_at > self.wall(asked)):
            info = result.get("info")
            peer.principal = dataclasses.replace(
                peer.principal, expires_at=float(expires_at),
                info=info if isinstance(info, dict) else peer.principal.info)
            self.deadlines.schedule(peer, self.wall_base, self.peers)
            self._plan_refresh(peer)
        return NOTHING  # else its expiry entry closes it 4401 at expires_at

    def _rpc_reply(self, peer: Peer, cmd: p.CustomCommand, outcome: Outcome) -> Effects:
        """The rpc hook's answer as the command's reply (§11)."""
        if isinstance(outcome, Allowed):
            return self._custom_reply(peer, cmd, outcome.result.get("data"), None)
        if isinstance(outcome, Denied):
            return (self.error(peer, error_code(outcome.code), outcome.message[:200], cmd.id),)
        if outcome.status == 404:
            return (self.error(peer, ErrorCode.UNKNOWN_TYPE,
                               f"unknown command type {cmd.type[:64]!r}", cmd.id),)
        return (self.error(peer, ErrorCode.UNAVAILABLE, "the application could not answer "
                           f"{cmd.type[:64]!r} ({outcome.reason}); retry later", cmd.id),)

    def _custom_reply(self, peer: Peer, cmd: p.CustomCommand, data: Any,
                      failure: BaseException | None) -> Effects:
        if failure is not None:
            self.metrics.handler_errors += 1
            return (self.error(peer, ErrorCode.INTERNAL, f"the {cmd.type!r} handler failed",
                               cmd.id),)
        try:
            return (self.reply(peer, {"type": cmd.type, "id": cmd.id, "data": data}),)
        except (TypeError, RecursionError, msgspec.EncodeError):  # too deep is not JSON either
            return (self.error(peer, ErrorCode.INTERNAL,
                               f"the {cmd.type!r} handler returned data that is not JSON",
                               cmd.id),)
