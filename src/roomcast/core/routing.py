"""The routing core: every routing decision of a node, with no IO and no trio.

Theory of operation (in the manner of h11's `_state.py`): everything that affects routing
state lives here, and nothing here knows about sockets, tasks or the backplane's wire.
The Router actor feeds the core its inputs — a connection asking to be admitted, a text
frame from a connection, a message or presence change or control event from the
backplane, the passing of time — together with `now` on its clock. Each input changes the
state at once, in one call that does not wait, and returns what must happen as effects
(`roomcast.core.effects`): frames for connections (`Send`, `Fanout`), closes (`Close`),
questions for the backplane (`Ask`, whose answer comes back into the core through its
`then`), and application command handlers to run (`RunCommand`). The actor performs them
in order. Because the core never waits, no two inputs ever see state half-changed; what
may change while the actor waits for an answer is checked by the `then` that receives it.

The parts: `state` (the data), `subscribe` (subscribing, recovery, leaving), `deadlines`
(token expiry and heartbeats), and this module: admission, commands, fan-out, cluster
control and the answers to the embedding API.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import msgspec

from roomcast import protocol as p
from roomcast.auth import AuthError, Principal
from roomcast.codes import CloseCode, ErrorCode, application_close_code
from roomcast.core.application import ApplicationSide
from roomcast.core.effects import (
    NOTHING,
    Ask,
    CallHook,
    Close,
    Effect,
    Effects,
    Fanout,
    RunCommand,
    Send,
)
from roomcast.core.peer import Peer
from roomcast.core.subscribe import RESET_MARK
from roomcast.errors import RoomcastError
from roomcast.hookwire import Denied, Failed, Outcome, error_code
from roomcast.metrics import Metrics
from roomcast.settings import Settings
from roomcast.streams import HistoryPage, PublishResult
from roomcast.websocket import PING_FRAME, text_frame


class _AnyType:
    """Every command type (with an rpc hook, a type roomcast does not know is the
    application's to answer)."""

    def __contains__(self, name: object) -> bool:
        return True


ANY_TYPE = _AnyType()


class Refused(RoomcastError):
    """A connection the limits do not admit: close it with `code`."""

    def __init__(self, code: int, reason: str, why: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.why = why


class RoutingCore(ApplicationSide):
    """Routes every message of one node; see the module's theory of operation."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        super().__init__(settings, metrics)

    # ------------------------------------------------------------ admission
    def authenticate(self, token: str | None, now: float) -> Principal:
        """Verify a handshake's token (counting failures by reason); AuthError if refused."""
        try:
            return self.authenticator.verify(token, self.wall(now), self.revocations)
        except AuthError as exc:
            self.metrics.auth_failures[exc.reason] += 1
            raise

    def admit(self, principal: Principal, remote: str, remote_ip: str, now: float,
              hooked: bool = False) -> tuple[Peer, bytes]:
        """Admit a connection within the limits (or raise Refused): its record, and its
        `connected` frame. `hooked`: the connect hook admitted it (§11), so the refresh hook
        may extend it."""
        s = self.settings
        if len(self.peers) >= s.max_connections:
            raise Refused(CloseCode.TRY_AGAIN_LATER, "server at capacity", "max_connections")
        if s.max_connections_per_ip and self.by_ip.get(remote_ip, 0) >= s.max_connections_per_ip:
            raise Refused(CloseCode.TRY_AGAIN_LATER, "too many connections from this address",
                          "max_connections_per_ip")
        mine = self.by_user.get(principal.user_id)
        if mine is not None and len(mine) >= s.max_connections_per_user:
            raise Refused(CloseCode.TOO_MANY, "too many connections for this user",
                          "max_connections_per_user")
        peer = Peer(principal, remote, remote_ip, now, s.rate_per_second, s.rate_burst)
        self.peers[peer.id] = peer
        self.by_user.setdefault(principal.user_id, set()).add(peer)
        self.by_ip[remote_ip] = self.by_ip.get(remote_ip, 0) + 1
        self.metrics.connections_opened += 1
        self.deadlines.schedule(peer, self.wall_base, self.peers)
        peer.hooked = hooked
        self._plan_refresh(peer)
        return peer, text_frame(p.encode({
            "type": "connected",
            "connection_id": peer.id,
            "user_id": principal.user_id,
            "node": s.node,
            "heartbeat": {"interval": s.heartbeat_interval, "timeout": s.heartbeat_timeout},
            "limits": {"max_message_bytes": s.max_message_bytes,
                       "rate_per_second": s.rate_per_second, "rate_burst": s.rate_burst},
            "server_time": p.iso_time(self.wall(now)),
        }))

    def leave(self, peer: Peer, code: int | None) -> Effects:
        """Forget a connection that is closing: its subscriptions, presence and counts."""
        if self.peers.pop(peer.id, None) is None:
            return NOTHING
        mine = self.by_user.get(peer.principal.user_id)
        if mine is not None:
            mine.discard(peer)
            if not mine:
                del self.by_user[peer.principal.user_id]
        left_ip = self.by_ip.get(peer.remote_ip, 1) - 1
        if left_ip:
            self.by_ip[peer.remote_ip] = left_ip
        else:
            self.by_ip.pop(peer.remote_ip, None)
        self.metrics.closes[code or CloseCode.NORMAL] += 1
        self.deadlines.compact(self.wall_base, self.peers)
        effects: list[Effect] = []
        for room, user_id, _left in self.table.drop(peer):
            effects += self.after_leave(room, user_id, peer.principal.info)
        return effects

    # ------------------------------------------------------------ commands
    def command(self, peer: Peer, text: str | bytes, now: float) -> Effects:
        """One text frame from a connection: every command gets one reply."""
        self.metrics.frames_in += 1
        try:
            command = p.parse(text, ANY_TYPE if self.settings.rpc_hook_url else self.custom_types)
        except p.ProtocolError as exc:
            return self._over_rate(peer, now, exc.id) or (
                self.error(peer, exc.code, exc.message, exc.id),)
        refused = self._over_rate(peer, now, command.id)
        if refused:
            return refused
        self.metrics.commands[type(command).__name__.lower()] += 1
        return self._dispatch(peer, command, now)

    def _over_rate(self, peer: Peer, now: float, command_id: p.CommandId) -> Effects:
        """The token bucket: nothing when the command may run; else its error, and a close
        for a client that keeps going."""
        if peer.bucket.take(now):
            return NOTHING
        effects: list[Effect] = [self.error(peer, ErrorCode.RATE_LIMITED,
                                            "too many commands; slow down", command_id)]
        if peer.abuse.record(now):
            effects.append(Close(peer, CloseCode.TOO_MANY, "rate limit exceeded repeatedly"))
        return effects

    def control_frame(self, peer: Peer, now: float, pong: bool = False) -> Effects:
        """A ping, pong or close frame from the client costs a token like a command (the
        pong that answers our own heartbeat ping is free); a client that keeps sending them
        with no token left is closed 4429. (A ping is answered all the same, as RFC 6455
        requires, and a close frame honoured.)"""
        if pong and peer.pongs_due:
            peer.pongs_due = 0
            return NOTHING
        if peer.bucket.take(now) or not peer.abuse.record(now):
            return NOTHING
        return (Close(peer, CloseCode.TOO_MANY, "too many control frames"),)

    def binary_frame(self, peer: Peer) -> Effects:
        """Binary frames are not part of the protocol: answer, then close if they keep coming."""
        self.metrics.frames_in += 1
        peer.binary_frames += 1
        if peer.binary_frames > self.settings.max_binary_frames:
            return (Close(peer, CloseCode.PROTOCOL_VIOLATION, "binary frames are not supported"),)
        return (self.error(peer, ErrorCode.BAD_REQUEST,
                           "binary frames are not supported; send JSON text frames"),)

    def _dispatch(self, peer: Peer, command: p.ClientCommand | p.CustomCommand, now: float
                  ) -> Effects:
        match command:
            case p.Publish():
                return self._publish(peer, command, now)
            case p.Subscribe():
                return self.subscribe(peer, command)
            case p.Unsubscribe():
                return self.unsubscribe(peer, command)
            case p.Ping():
                return (self.reply(peer, {"type": "pong", "id": command.id,
                                          "server_time": p.iso_time(self.wall(now))}),)
            case p.History():
                return self._history(peer, command)
            case p.Presence():
                return self._presence(peer, command)
            case p.Refresh():
                return self._refresh(peer, command, now)
            case p.CustomCommand() if command.type in self.custom_types:
                return (RunCommand(peer, command.type, command.payload,
                                   lambda data, exc: self._custom_reply(peer, command, data, exc)),)
            case p.CustomCommand():  # no app handler here: the rpc hook answers it (§11)
                return (CallHook("rpc", self.hook_body(peer, type=command.type, command={
                    k: v for k, v in command.payload.items() if k != "id"}),
                    lambda outcome: self._rpc_reply(peer, command, outcome)),)

    def _unavailable(self, peer: Peer, command_id: p.CommandId) -> Any:
        def answer(exc: Exception) -> Effects:
            return (self.error(peer, ErrorCode.UNAVAILABLE, f"the cluster backplane is "
                               f"unreachable ({exc}); retry with backoff", command_id),)
        return answer

    def _publish(self, peer: Peer, cmd: p.Publish, now: float) -> Effects:
        if not p.valid_room(cmd.room):
            return (self.error(peer, ErrorCode.BAD_ROOM, p.bad_room_message(cmd.room), cmd.id),)
        s = self.settings
        if self.hooked(s.publish_hook_url, s.publish_hook_rooms, cmd.room):  # §11 publish
            try:
                data = msgspec.json.decode(bytes(cmd.data))
            except (msgspec.DecodeError, RecursionError):
                return (self.error(peer, ErrorCode.BAD_REQUEST, "data is too deep for the "
                                   "application's publish hook", cmd.id),)
            body = self.hook_body(peer, room=cmd.room, event=cmd.event, data=data)
            return (CallHook("publish", body, lambda outcome: self._publish_decided(
                peer, cmd, outcome, now)),)
        if not peer.principal.can_publish(cmd.room):
            return (self.error(peer, ErrorCode.FORBIDDEN,
                               f"not allowed to publish to {cmd.room}", cmd.id),)
        return self._publish_as(peer, cmd, bytes(cmd.data), cmd.event, now)

    def _publish_decided(self, peer: Peer, cmd: p.Publish, outcome: Outcome, now: float
                         ) -> Effects:
        """The publish hook's answer: publish as sent or as rewritten, or refuse."""
        if isinstance(outcome, Denied):
            return (self.error(peer, error_code(outcome.code), outcome.message[:200] or
                               f"the application refused a publish to {cmd.room}", cmd.id),)
        if isinstance(outcome, Failed):
            return (self.error(peer, ErrorCode.UNAVAILABLE, "the application could not "
                               f"decide this publish ({outcome.reason}); retry later", cmd.id),)
        result = outcome.result
        event = result.get("event", cmd.event)
        if event is not None and not isinstance(event, str):
            return (self.error(peer, ErrorCode.UNAVAILABLE, "the application's publish hook "
                               "returned an event that is not a string", cmd.id),)
        try:
            data = msgspec.json.encode(result["data"]) if "data" in result else bytes(cmd.data)
        except (TypeError, RecursionError, msgspec.EncodeError):
            return (self.error(peer, ErrorCode.UNAVAILABLE, "the application's publish hook "
                               "returned data that is not JSON", cmd.id),)
        return self._publish_as(peer, cmd, data, event, now)

    def _publish_as(self, peer: Peer, cmd: p.Publish, data: bytes, event: str | None,
                    now: float) -> Effects:
        def published(result: PublishResult) -> Effects:
            self.metrics.publishes += 1
            reply: dict[str, Any] = {"type": "published", "id": cmd.id, "room": cmd.room,
                                     "offset": result.offset, "epoch": result.epoch}
            if result.duplicate:
                reply["duplicate"] = True
            return (self.reply(peer, reply),)

        template = self.template(cmd.room, data, event, peer.principal.user_id, now)
        return (Ask("publish", (cmd.room, template, event, cmd.idempotency_key),
                    published, self._unavailable(peer, cmd.id)),)

    def template(self, room: str, data: bytes, event: str | None, sender: str | None,
                 now: float) -> p.MessageTemplate:
        """A message encoded once, split around the offset the backplane will assign."""
        return p.message_template(room, data, event, sender, self.wall(now))

    def _history(self, peer: Peer, cmd: p.History) -> Effects:
        refused = self.readable(peer, cmd.room, cmd.id)
        if refused is not None:
            return (refused,)

        def page(result: HistoryPage) -> Effects:
            return (Send(peer, text_frame(p.history_body(cmd.room, result, id=cmd.id))),)

        return (Ask("history", (cmd.room, cmd.since, cmd.limit), page,
                    self._unavailable(peer, cmd.id)),)

    def _presence(self, peer: Peer, cmd: p.Presence) -> Effects:
        refused = self.readable(peer, cmd.room, cmd.id)
        if refused is not None:
            return (refused,)
        return (Ask("presence", (cmd.room,), lambda users: (self.reply(peer, {
            "type": "presence", "id": cmd.id, "room": cmd.room, "users": users}),),
            self._unavailable(peer, cmd.id)),)

    def _refresh(self, peer: Peer, cmd: p.Refresh, now: float) -> Effects:
        try:
            principal = self.authenticate(cmd.token, now)
        except AuthError as exc:
            return (self.error(peer, ErrorCode.FORBIDDEN, f"refresh refused: {exc}", cmd.id),)
        if principal.user_id != peer.principal.user_id:
            return (self.error(peer, ErrorCode.FORBIDDEN,
                               "refresh refused: the token is for another user", cmd.id),)
        peer.principal = principal
        self.deadlines.schedule(peer, self.wall_base, self.peers)
        return (self.reply(peer, {"type": "refreshed", "id": cmd.id,
                                  "expires_at": p.iso_time(principal.expires_at)[:-5] + "Z"}),)

    # ------------------------------------------------------------ from the backplane
    def deliver(self, room: str, offset: int, payload: bytes, event: str | None) -> Effects:
        """One message (framed once) for every local subscription that admits it."""
        if room not in self.table.rooms:
            return NOTHING
        frame = text_frame(payload)
        peers = []
        closes: list[Effect] = []
        for sub in self.table.recipients(room, event, p.LazyData(payload)):
            if sub.floor is not None:
                if offset <= sub.floor:
                    continue
                sub.floor = None
            if sub.held is not None:
                sub.held.append((offset, frame))
                if len(sub.held) > self.settings.max_pending:
                    closes.append(Close(sub.subscriber, CloseCode.TOO_SLOW,
                                        "too slow: outgoing queue overflowed"))
                continue
            peers.append(sub.subscriber)
        self.metrics.deliveries += len(peers)
        if closes:
            return (Fanout(frame, peers), *closes)
        return (Fanout(frame, peers),)

    def presence_changed(self, room: str, user_id: str, info: dict[str, Any] | None,
                         joined: bool) -> Effects:
        """A user's first connection entered `room`, or its last one left (cluster-wide)."""
        watchers = self.table.watchers(room)
        if not watchers:
            return NOTHING
        body: dict[str, Any] = {"type": "joined" if joined else "left", "room": room,
                                "user_id": user_id}
        if joined:
            body["info"] = info or {}
        return (Fanout(text_frame(p.encode(body)), [sub.subscriber for sub in watchers]),)

    def reset(self, room: str, epoch: str, offset: int, missed: tuple[int, int] | None
              ) -> Effects:
        """The room's stream changed (§17): every live subscriber hears it before the next
        message; one still being answered gets it after its recovery."""
        subs = self.table.rooms.get(room)
        if not subs:
            return NOTHING
        body: dict[str, Any] = {"type": "reset", "room": room, "epoch": epoch, "offset": offset}
        if missed is not None:
            body["missed"] = {"from": missed[0], "to": missed[1]}
            self.metrics.undeliverable += (missed[1] - missed[0] + 1) * len(subs)
        self.metrics.resets += 1
        frame = text_frame(p.encode(body))
        peers = []
        for sub in list(subs.values()):
            sub.floor = None
            if sub.held is not None:
                sub.held.append((RESET_MARK, frame))
            else:
                peers.append(sub.subscriber)
        return (Fanout(frame, peers),)

    def resumed(self) -> None:
        """The backplane reconnected: no subscription may skip messages by an offset it saw
        before (offsets may have started over)."""
        for subs in self.table.rooms.values():
            for sub in subs.values():
                sub.floor = None

    def control(self, kind: str, payload: dict[str, Any], now: float) -> Effects:
        """A cluster-wide instruction: `disconnect` a user, or `revoke` a token id."""
        if kind == "disconnect":
            code = int(payload.get("code") or CloseCode.NORMAL)
            if not application_close_code(code):
                code = CloseCode.NORMAL  # never a code the wire refuses
            reason = str(payload.get("reason") or "disconnected by the server")
            return [Close(peer, code, reason)
                    for peer in self.by_user.get(str(payload.get("user_id")), ())]
        if kind in ("subscribe", "unsubscribe"):
            return self._server_side(kind, payload)
        if kind == "revoke":
            jti = str(payload["jti"])
            expires_at = payload.get("expires_at")
            # Kept until the token could no longer pass anyway: its exp plus the leeway.
            keep_until = (float(expires_at) + self.settings.jwt_leeway
                          if expires_at is not None else None)
            self.revocations.revoke(jti, self.wall(now), keep_until)
            return [Close(peer, CloseCode.UNAUTHORIZED, "token revoked")
                    for peer in self.peers.values() if peer.principal.jti == jti]
        return NOTHING

    # ------------------------------------------------------------ the embedding API
    def direct(self, connection_id: str, data: Any, event: str | None, now: float
               ) -> Send | None:
        """A `direct` frame for one connection of this node; None if it is not here."""
        peer = self.peers.get(connection_id)
        if peer is None:
            return None
        return self.reply(peer, {"type": "direct", "event": event, "data": data,
                                 "ts": p.iso_time(self.wall(now))})

    def stats(self) -> dict[str, Any]:
        return {"connections": len(self.peers), "users": len(self.by_user),
                "rooms": len(self.table.rooms), "node": self.settings.node}

    # ------------------------------------------------------------ time
    def tick(self, now: float) -> Effects:
        """Close connections whose token ran out (4401; 1013 when the refresh hook kept
        failing) or that went silent (4408), ask the refresh hook where it is due, and ping
        the others when a heartbeat is due."""
        effects: list[Effect] = [
            Close(peer, CloseCode.TRY_AGAIN_LATER, "auth backend unavailable") if peer.grace
            else Close(peer, CloseCode.UNAUTHORIZED, "token expired")
            for peer in self.deadlines.expired(now, self.wall_base, self.peers)]
        for peer in self.deadlines.refreshes_due(now, self.peers):
            effects.append(CallHook("refresh", self.hook_body(peer), partial(
                self._refreshed, peer, now)))
        sweep, ping = self.deadlines.heartbeat_due(now)
        if sweep:
            timeout = self.settings.heartbeat_timeout
            alive = []
            for peer in self.peers.values():
                if now - peer.last_seen > timeout:
                    effects.append(Close(peer, CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout"))
                elif ping:
                    peer.pongs_due = 1  # its answer costs the client nothing
                    alive.append(peer)
            if alive:
                effects.append(Fanout(PING_FRAME, alive))
            self.revocations.prune(self.wall(now))
        return effects
