"""Subscribing and leaving rooms: the permission and limit checks, the answer with its
recovery, and the bookkeeping once a subscription is gone.

A subscribe is answered in two steps around one question to the backplane (each room's
position and, with `since`, what to resend). Between the two, live messages for the new
subscriptions wait in `Subscription.held`, so none overtakes the reply or the recovery.
"""

from __future__ import annotations

from typing import Any

import msgspec

from roomcast import protocol as p
from roomcast.codes import ErrorCode
from roomcast.core.effects import Ask, CallHooks, Effect, Effects, Send
from roomcast.core.peer import Peer
from roomcast.core.state import CoreState
from roomcast.hookwire import Denied, Failed, Outcome, error_code
from roomcast.rooms import Subscription
from roomcast.streams import RoomPosition
from roomcast.websocket import text_frame

RESET_MARK = -1  # a held `reset` frame: it and everything after it go out as they are

Accepted = list[tuple[str, Subscription[Peer], bool]]  # (room, subscription, is new)


class Subscriptions(CoreState):
    """The subscribe, unsubscribe and leave decisions of the routing core."""

    def subscribe(self, peer: Peer, cmd: p.Subscribe, server: bool = False,
                  decided: dict[str, Outcome] | None = None) -> Effects:
        """Check and record each room; then ask the backplane where each room stands.
        `server`: a subscription the application makes (§12): no permission check, and the
        answer is a `subscribed` frame with `"server": true` and no id. Rooms the subscribe
        hook decides (§11) are asked first, all at once; `decided` holds its answers."""
        if decided is None and not server:
            s = self.settings
            asked = [room for room in dict.fromkeys(cmd.rooms)
                     if self.hooked(s.subscribe_hook_url, s.subscribe_hook_rooms, room)]
            if asked:
                return (CallHooks(
                    [("subscribe", self.hook_body(peer, room=room)) for room in asked],
                    lambda outcomes: self.subscribe(peer, cmd, server, dict(
                        zip(asked, outcomes, strict=True)))),)
        elif decided is not None and peer.id not in self.peers:
            return ()  # it closed while the application was deciding
        principal = peer.principal
        results: dict[str, dict[str, Any]] = {}
        accepted: Accepted = []
        effects: list[Effect] = []
        for room in dict.fromkeys(cmd.rooms):
            outcome = decided.get(room) if decided else None
            if isinstance(outcome, Denied | Failed):
                results[room] = {"ok": False, "error": (
                    error_code(outcome.code) if isinstance(outcome, Denied)
                    else ErrorCode.UNAVAILABLE)}
                continue
            refusal = self._refusal(peer, room, server or outcome is not None)
            if refusal is not None:
                results[room] = {"ok": False, "error": refusal}
                continue
            first_here = room not in self.table.rooms
            sub, is_new, _joined = self.table.subscribe(
                peer, room, principal.user_id, principal.info, cmd.events, cmd.where,
                cmd.presence,
            )
            if server:
                sub.server = True
            if sub.held is None:
                sub.held = []  # live messages wait until the reply and recovery are out
            if first_here:
                effects.append(Ask("watch", (room,)))
            accepted.append((room, sub, is_new))
            results[room] = {}
        if not accepted:
            effects.append(self._subscribed(peer, cmd, results, server))
            return effects
        questions = [(room, _since(cmd, room)) for room, _, _ in accepted]
        effects.append(Ask("positions", (questions,), lambda answers: self._answer(
            peer, cmd, accepted, results, answers, server)))
        return effects

    def _refusal(self, peer: Peer, room: str, server: bool = False) -> ErrorCode | None:
        if not p.valid_room(room):
            return ErrorCode.BAD_ROOM
        existing = self.table.get(peer, room)
        if not (server or peer.principal.can_subscribe(room)
                or (existing is not None and existing.server)
                or room in self.server_rooms.get(peer.principal.user_id, ())):
            return ErrorCode.FORBIDDEN
        if existing is None and (
            len(self.table.subscriptions(peer)) >= self.settings.max_subscriptions
        ):
            return ErrorCode.TOO_MANY_SUBSCRIPTIONS
        return None

    def _subscribed(self, peer: Peer, cmd: p.Subscribe, results: dict[str, dict[str, Any]],
                    server: bool = False) -> Send:
        rooms = {room: results[room] for room in dict.fromkeys(cmd.rooms)}
        if server:
            return self.reply(peer, {"type": "subscribed", "server": True, "rooms": rooms})
        return self.reply(peer, {"type": "subscribed", "id": cmd.id, "rooms": rooms})

    def _answer(self, peer: Peer, cmd: p.Subscribe, accepted: Accepted,
                results: dict[str, dict[str, Any]], answers: list[RoomPosition | Exception],
                server: bool = False) -> Effects:
        """The backplane has answered (the connection may have closed, or a subscription
        been replaced, meanwhile: each is checked). One uninterrupted step: the reply, then
        the recovered messages, then the held live ones, room by room."""
        effects: list[Effect] = []
        positions: dict[str, tuple[int, list[tuple[int, bytes]]]] = {}
        for (room, sub, is_new), answer in zip(accepted, answers, strict=True):
            if isinstance(answer, Exception):
                results[room] = {"ok": False, "error": ErrorCode.UNAVAILABLE}
                effects += self._undo(peer, room, sub, is_new)
                continue
            entry: dict[str, Any] = {"ok": True, "offset": answer.offset, "epoch": answer.epoch}
            if server:
                entry["recovered"] = False  # as §12's example: nothing was asked back
            if _since(cmd, room) is not None:
                entry["recovered"] = answer.recovered
                if answer.missed is not None:
                    entry["missed"] = {"from": answer.missed[0], "to": answer.missed[1]}
            results[room] = entry
            positions[room] = (answer.offset, answer.messages)
        self._fit_recovery(peer, cmd, accepted, positions, results)
        effects.append(self._subscribed(peer, cmd, results, server))
        for room, sub, _ in accepted:
            if room in positions and self.table.get(peer, room) is sub:
                effects += self._release(peer, sub, *positions[room])
        for room, sub, is_new in accepted:
            if is_new and self.table.get(peer, room) is sub:
                effects.append(self.presence_count(room, peer.principal.user_id,
                                                   peer.principal.info))
        return effects

    def _undo(self, peer: Peer, room: str, sub: Subscription[Peer], is_new: bool) -> Effects:
        """The room's position could not be read: a new subscription is taken back; a
        replaced one stays, and what it held goes out."""
        if self.table.get(peer, room) is not sub:
            return ()
        if is_new:
            self.table.unsubscribe(peer, room)
            return (Ask("unwatch", (room,)),) if room not in self.table.rooms else ()
        held, sub.held = sub.held or [], None
        return [Send(peer, frame) for _offset, frame in held]

    def _release(self, peer: Peer, sub: Subscription[Peer], top: int,
                 recovered: list[tuple[int, bytes]]) -> Effects:
        """Recovered messages, then the live ones held meanwhile that are newer than `top`
        (and, after a held reset, everything of the new stream)."""
        out: list[Effect] = [Send(peer, text_frame(payload)) for _offset, payload in recovered]
        held, sub.held = sub.held or [], None
        sub.floor = top
        after_reset = False
        for offset, frame in held:
            if offset == RESET_MARK:
                after_reset = True
                sub.floor = None
            if after_reset or offset > top:
                out.append(Send(peer, frame))
                sub.floor = None
        return out

    def _fit_recovery(self, peer: Peer, cmd: p.Subscribe, accepted: Accepted,
                      positions: dict[str, tuple[int, list[tuple[int, bytes]]]],
                      results: dict[str, dict[str, Any]]) -> None:
        """Trim what a subscribe recovers to what its filters admit and to half the outgoing
        queue: when a room's messages do not all fit, the newest are sent and the older ones
        are reported as `missed` (still in `history`), instead of overflowing the queue into
        a 4409 that the client's resume with `since` would repeat forever."""
        queued = peer.outlet.queued if peer.outlet is not None else 0
        budget = self.settings.max_pending // 2 - 1 - queued
        for room, sub, _ in accepted:
            since = _since(cmd, room)
            if room not in positions or not positions[room][1] or since is None:
                continue
            top, messages = positions[room]
            if sub.events is not None or sub.where is not None:
                messages = [m for m in messages if _admits(sub, m[1])]
            if len(messages) > max(budget, 0):
                messages = messages[len(messages) - max(budget, 0):]
                entry = results[room]
                first = entry["missed"]["from"] if "missed" in entry else since[0] + 1
                entry["recovered"] = False
                entry["missed"] = {"from": first, "to": messages[0][0] - 1 if messages else top}
            positions[room] = (top, messages)
            budget -= len(messages)

    def unsubscribe(self, peer: Peer, cmd: p.Unsubscribe) -> Effects:
        rooms = list(dict.fromkeys(cmd.rooms))
        gone = [room for room in rooms if self.table.unsubscribe(peer, room)[0]]
        effects: list[Effect] = [self.reply(peer, {"type": "unsubscribed", "id": cmd.id,
                                                   "rooms": rooms})]
        for room in gone:
            effects += self.after_leave(room, peer.principal.user_id, peer.principal.info)
        return effects

    def server_unsubscribe(self, peer: Peer, room: str) -> Effects:
        """The application takes a connection out of a room (§12): told with a frame that
        has `"server": true` and no id (only when it was in the room)."""
        existed, _left = self.table.unsubscribe(peer, room)
        if not existed:
            return ()
        return (self.reply(peer, {"type": "unsubscribed", "server": True, "rooms": [room]}),
                *self.after_leave(room, peer.principal.user_id, peer.principal.info))

    def after_leave(self, room: str, user_id: str, info: dict[str, Any]) -> Effects:
        """Backplane bookkeeping once a local subscription is gone: presence, and no more
        watching a room nobody here is in."""
        effects: list[Effect] = [self.presence_count(room, user_id, info)]
        if room not in self.table.rooms:
            effects.append(Ask("unwatch", (room,), unavailable=self._presence_dropped))
        return effects

    def presence_count(self, room: str, user_id: str, info: dict[str, Any]) -> Ask:
        """Tell the backplane how many of the user's connections here are in `room` now."""
        entry = self.table.presence(room).get(user_id)
        count = entry.connections if entry else 0
        return Ask("presence_update", (room, user_id, info, count),
                   unavailable=self._presence_dropped)

    def _presence_dropped(self, exc: Exception) -> Effects:
        self.metrics.drops["presence_update"] += 1
        return ()


def _since(cmd: p.Subscribe, room: str) -> tuple[int, str] | None:
    position = cmd.since.get(room) if cmd.since else None
    return (position.offset, position.epoch) if position is not None else None


def _admits(sub: Subscription[Peer], payload: bytes) -> bool:
    """Whether a stored message frame passes a subscription's `events`/`where` filters."""
    message: Any = msgspec.json.decode(payload)
    return sub.admits(message.get("event"), lambda: message.get("data"))
