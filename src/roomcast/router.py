"""The Router: the one owner of connections, rooms, limits, deadlines and presence.

Every change to routing state happens in plain (non-awaiting) methods, so no two tasks
ever see it half-changed and no lock is needed. It never awaits a socket: `Conn.send`
writes without waiting (or queues, bounded), and a full queue closes that connection
with 4409 instead of slowing anybody else.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio

from roomcast import protocol as p
from roomcast.auth import Authenticator, AuthError, Principal, RevocationList
from roomcast.backplane import (
    Backplane,
    BackplaneUnavailable,
    create_backplane,
)
from roomcast.connection import Conn
from roomcast.log import event
from roomcast.metrics import Metrics
from roomcast.rooms import RoutingTable, Subscription
from roomcast.settings import Settings

CommandHandler = Callable[[Principal, dict[str, Any]], Awaitable[Any]]


class Refused(Exception):
    """A connection the limits do not admit: close it with `code`."""

    def __init__(self, code: int, reason: str, why: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.why = why


class Router:
    """Routes every message of this node. Made by `open_router`; see docs/embedding.md."""

    def __init__(self, settings: Settings, backplane: Backplane | None = None) -> None:
        self.settings = settings
        self.backplane = backplane or create_backplane(settings)
        self.authenticator = Authenticator(settings)
        self.revocations = RevocationList()
        self.metrics = Metrics()
        self.table: RoutingTable[Conn] = RoutingTable()
        self.conns: dict[str, Conn] = {}
        self.by_user: dict[str, set[Conn]] = {}
        self.by_ip: dict[str, int] = {}
        self.commands: dict[str, CommandHandler] = {}
        self.draining = False
        self.ws_port: int | None = None
        self.http_port: int | None = None
        self._expiries: list[tuple[float, int, Conn]] = []
        self._expiry_seq = itertools.count()
        self._wake: trio.CancelScope | None = None
        self._shutdown = trio.Event()
        self._drained = trio.Event()
        self.sockets = 0  # connection actors still running, closing handshakes included
        self._wall_base = time.time() - time.monotonic()

    def wall(self) -> float:
        """Unix time on the Trio clock, so token expiry follows a MockClock in tests."""
        return self._wall_base + trio.current_time()

    # ------------------------------------------------------------ lifecycle
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The Router's own tasks: the backplane's receiver and the one sweeper."""
        self._wall_base = time.time() - trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.backplane.run, self)
            nursery.start_soon(self._sweeper)
            task_status.started()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the WebSocket (and HTTP) listeners until `shutdown()` drains them."""
        from roomcast.server import serve

        await serve(self, task_status=task_status)

    def shutdown(self) -> None:
        """Begin a graceful shutdown: stop accepting and close everyone with 1001."""
        self._shutdown.set()

    async def wait_shutdown(self) -> None:
        await self._shutdown.wait()

    async def wait_drained(self) -> None:
        """Return once no connection is left, closing handshakes included (used while
        draining)."""
        if self.conns or self.sockets:
            self._drained = trio.Event()
            await self._drained.wait()

    def check_drained(self) -> None:
        if not self.conns and not self.sockets:
            self._drained.set()

    @property
    def ready(self) -> bool:
        return not self.draining and self.backplane.ready

    # ------------------------------------------------------------ connections
    def authenticate(self, token: str | None) -> Principal:
        """Verify a handshake's token (counting failures by reason)."""
        try:
            return self.authenticator.verify(token, self.wall(), self.revocations)
        except AuthError as exc:
            self.metrics.auth_failures[exc.reason] += 1
            raise

    def connect(self, principal: Principal, remote: str, remote_ip: str,
                stream: trio.abc.Stream | None = None, preamble: bytes = b"") -> Conn:
        """Admit a connection within the limits, or raise Refused; the `connected` frame
        goes out on `stream` at once, in one write with `preamble` (the handshake's answer)."""
        s = self.settings
        if self.draining:
            raise Refused(p.GOING_AWAY, "server shutting down", "draining")
        if len(self.conns) >= s.max_connections:
            raise Refused(p.TRY_AGAIN_LATER, "server at capacity", "max_connections")
        if s.max_connections_per_ip and self.by_ip.get(remote_ip, 0) >= s.max_connections_per_ip:
            raise Refused(p.TRY_AGAIN_LATER, "too many connections from this address",
                          "max_connections_per_ip")
        mine = self.by_user.get(principal.user_id)
        if mine is not None and len(mine) >= s.max_connections_per_user:
            raise Refused(p.TOO_MANY, "too many connections for this user",
                          "max_connections_per_user")
        conn = Conn(self, principal, remote, remote_ip, trio.current_time(), stream)
        self.conns[conn.id] = conn
        self.by_user.setdefault(principal.user_id, set()).add(conn)
        self.by_ip[remote_ip] = self.by_ip.get(remote_ip, 0) + 1
        self.metrics.connections_opened += 1
        self._schedule_expiry(conn)
        conn.send(preamble + p.text_frame(p.encode({
            "type": "connected",
            "connection_id": conn.id,
            "user_id": principal.user_id,
            "node": s.node,
            "heartbeat": {"interval": s.heartbeat_interval, "timeout": s.heartbeat_timeout},
            "limits": {"max_message_bytes": s.max_message_bytes,
                       "rate_per_second": s.rate_per_second, "rate_burst": s.rate_burst},
            "server_time": p.iso_time(time.time()),
        })))
        return conn

    async def disconnect(self, conn: Conn) -> None:
        """Forget a connection that has ended: its subscriptions, presence and counts."""
        if self.conns.pop(conn.id, None) is None:
            return
        self.check_drained()
        mine = self.by_user.get(conn.principal.user_id)
        if mine is not None:
            mine.discard(conn)
            if not mine:
                del self.by_user[conn.principal.user_id]
        left_ip = self.by_ip.get(conn.remote_ip, 1) - 1
        if left_ip:
            self.by_ip[conn.remote_ip] = left_ip
        else:
            self.by_ip.pop(conn.remote_ip, None)
        self.metrics.closes[conn.close_code or p.NORMAL] += 1
        self._compact_expiries()
        dropped = self.table.drop(conn)
        for room, user_id, _left in dropped:
            await self._after_leave(room, user_id, conn.principal.info)

    # ------------------------------------------------------------ commands
    def command(self, name: str) -> Callable[[CommandHandler], CommandHandler]:
        """Register an app's own command type: `@router.command("request_metrics")` over an
        `async def handler(principal, payload) -> reply data`."""
        if name in p.KNOWN_TYPES:
            raise ValueError(f"{name!r} is a built-in command type; choose another name")

        def register(handler: CommandHandler) -> CommandHandler:
            self.commands[name] = handler
            return handler

        return register

    async def handle(self, conn: Conn, text: str) -> None:
        """Execute one text frame from a connection; every command gets one reply."""
        self.metrics.frames_in += 1
        now = trio.current_time()
        try:
            command = p.parse(text, self.commands)
        except p.ProtocolError as exc:
            if self._admit(conn, now, exc.id):
                conn.error(exc.code, exc.message, exc.id)
            return
        if not self._admit(conn, now, command.id):
            return
        try:
            await self._dispatch(conn, command)
        except BackplaneUnavailable as exc:
            conn.error(p.UNAVAILABLE, f"the cluster backplane is unreachable ({exc}); "
                       "retry with backoff", command.id)

    def _admit(self, conn: Conn, now: float, command_id: p.CommandId) -> bool:
        """The token bucket: refuse over-rate commands, close clients that keep going."""
        if conn.bucket.take(now):
            return True
        conn.error(p.RATE_LIMITED, "too many commands; slow down", command_id)
        if conn.abuse.record(now):
            conn.close(p.TOO_MANY, "rate limit exceeded repeatedly")
        return False

    def binary_frame(self, conn: Conn) -> None:
        """Binary frames are not part of the protocol: answer, then close if they keep coming."""
        self.metrics.frames_in += 1
        conn.binary_frames += 1
        if conn.binary_frames > self.settings.max_binary_frames:
            conn.close(p.PROTOCOL_VIOLATION, "binary frames are not supported")
        else:
            conn.error(p.BAD_REQUEST, "binary frames are not supported; send JSON text frames")

    async def _dispatch(self, conn: Conn, command: p.ClientCommand | p.CustomCommand) -> None:
        match command:
            case p.Publish():
                await self._publish_command(conn, command)
            case p.Subscribe():
                await self._subscribe(conn, command)
            case p.Unsubscribe():
                await self._unsubscribe(conn, command)
            case p.Ping():
                conn.reply({"type": "pong", "id": command.id,
                            "server_time": p.iso_time(time.time())})
            case p.History():
                await self._history(conn, command)
            case p.Presence():
                await self._presence(conn, command)
            case p.Refresh():
                self._refresh(conn, command)
            case p.CustomCommand():
                await self._custom(conn, command)
        self.metrics.commands[type(command).__name__.lower()] += 1

    def _readable(self, conn: Conn, room: str, command_id: p.CommandId) -> bool:
        if not p.valid_room(room):
            conn.error(p.BAD_ROOM, f"{room[:200]!r} is not a valid room name", command_id)
            return False
        if not conn.principal.can_subscribe(room):
            conn.error(p.FORBIDDEN, f"not allowed to read {room}", command_id)
            return False
        return True

    async def _publish_command(self, conn: Conn, cmd: p.Publish) -> None:
        if not p.valid_room(cmd.room):
            conn.error(p.BAD_ROOM, f"{cmd.room[:200]!r} is not a valid room name", cmd.id)
            return
        if not conn.principal.can_publish(cmd.room):
            conn.error(p.FORBIDDEN, f"not allowed to publish to {cmd.room}", cmd.id)
            return
        result = await self._publish(cmd.room, bytes(cmd.data), cmd.event,
                                     conn.principal.user_id, cmd.idempotency_key)
        reply: dict[str, Any] = {"type": "published", "id": cmd.id, "room": cmd.room,
                                 "offset": result.offset}
        if result.duplicate:
            reply["duplicate"] = True
        conn.reply(reply)

    async def _subscribe(self, conn: Conn, cmd: p.Subscribe) -> None:
        principal = conn.principal
        results: dict[str, dict[str, Any]] = {}
        accepted: list[tuple[str, Subscription[Conn], bool]] = []
        for room in dict.fromkeys(cmd.rooms):
            if not p.valid_room(room):
                results[room] = {"ok": False, "error": p.BAD_ROOM}
                continue
            if not principal.can_subscribe(room):
                results[room] = {"ok": False, "error": p.FORBIDDEN}
                continue
            existing = self.table.get(conn, room)
            if existing is None and (
                len(self.table.subscriptions(conn)) >= self.settings.max_subscriptions
            ):
                results[room] = {"ok": False, "error": p.TOO_MANY_SUBSCRIPTIONS}
                continue
            first_here = room not in self.table.rooms
            sub, is_new, _joined = self.table.subscribe(
                conn, room, principal.user_id, principal.info, cmd.events, cmd.where,
                cmd.presence,
            )
            if sub.held is None:
                sub.held = []  # live messages wait until the reply and recovery are out
            if first_here:
                await self.backplane.watch(room)
            accepted.append((room, sub, is_new))
            results[room] = {}
        positions: dict[str, tuple[int, list[tuple[int, bytes]]]] = {}
        for room, sub, is_new in accepted:
            since = cmd.since.get(room) if cmd.since else None
            try:
                pos = await self.backplane.position(
                    room, (since.offset, since.epoch) if since else None
                )
            except BackplaneUnavailable:
                results[room] = {"ok": False, "error": p.UNAVAILABLE}
                if is_new and self.table.get(conn, room) is sub:
                    self.table.unsubscribe(conn, room)
                    if room not in self.table.rooms:
                        await self.backplane.unwatch(room)
                elif self.table.get(conn, room) is sub:  # stays subscribed: stop holding
                    held, sub.held = sub.held or [], None
                    for _offset, frame in held:
                        conn.send(frame)
                continue
            entry: dict[str, Any] = {"ok": True, "offset": pos.offset, "epoch": pos.epoch}
            if since is not None:
                entry["recovered"] = pos.recovered
                if pos.missed is not None:
                    entry["missed"] = {"from": pos.missed[0], "to": pos.missed[1]}
            results[room] = entry
            positions[room] = (pos.offset, pos.messages)
        self._fit_recovery(conn, cmd, accepted, positions, results)
        # One uninterrupted step: the reply, then recovered messages, then held live ones.
        conn.reply({"type": "subscribed", "id": cmd.id,
                    "rooms": {room: results[room] for room in dict.fromkeys(cmd.rooms)}})
        for room, sub, _ in accepted:
            if room not in positions or self.table.get(conn, room) is not sub:
                continue
            top, recovered = positions[room]
            for _offset, payload in recovered:
                conn.send(p.text_frame(payload))
            held, sub.held = sub.held or [], None
            sub.floor = top
            for offset, frame in held:
                if offset > top:
                    conn.send(frame)
                    sub.floor = None
        for room, sub, is_new in accepted:
            if is_new and self.table.get(conn, room) is sub:
                await self._presence_count(room, principal.user_id, principal.info)

    def _fit_recovery(
        self, conn: Conn, cmd: p.Subscribe, accepted: list[tuple[str, Subscription[Conn], bool]],
        positions: dict[str, tuple[int, list[tuple[int, bytes]]]],
        results: dict[str, dict[str, Any]],
    ) -> None:
        """Trim what a subscribe recovers to what its filters admit and to half the outgoing
        queue: when a room's messages do not all fit, the newest are sent and the older ones are
        reported as `missed` (still in `history`), instead of overflowing the queue into a
        4409 that the client's resume with `since` would repeat forever."""
        budget = self.settings.max_pending // 2 - 1 - conn.queued
        for room, sub, _ in accepted:
            if room not in positions or not positions[room][1] or cmd.since is None:
                continue
            top, messages = positions[room]
            if sub.events is not None or sub.where is not None:
                messages = [m for m in messages if _admits(sub, m[1])]
            if len(messages) > max(budget, 0):
                messages = messages[len(messages) - max(budget, 0):]
                entry = results[room]
                first = entry["missed"]["from"] if "missed" in entry else cmd.since[room].offset + 1
                entry["recovered"] = False
                entry["missed"] = {"from": first, "to": messages[0][0] - 1 if messages else top}
            positions[room] = (top, messages)
            budget -= len(messages)

    async def _unsubscribe(self, conn: Conn, cmd: p.Unsubscribe) -> None:
        rooms = list(dict.fromkeys(cmd.rooms))
        gone = []
        for room in rooms:
            existed, _left = self.table.unsubscribe(conn, room)
            if existed:
                gone.append(room)
        conn.reply({"type": "unsubscribed", "id": cmd.id, "rooms": rooms})
        for room in gone:
            await self._after_leave(room, conn.principal.user_id, conn.principal.info)

    async def _after_leave(self, room: str, user_id: str, info: dict[str, Any]) -> None:
        """Backplane bookkeeping once a local subscription is gone (presence, watching)."""
        try:
            await self._presence_count(room, user_id, info)
            if room not in self.table.rooms:
                await self.backplane.unwatch(room)
        except BackplaneUnavailable:
            self.metrics.drops["presence_update"] += 1

    async def _presence_count(self, room: str, user_id: str, info: dict[str, Any]) -> None:
        entry = self.table.presence(room).get(user_id)
        await self.backplane.presence_update(
            room, user_id, info, entry.connections if entry else 0
        )

    async def _history(self, conn: Conn, cmd: p.History) -> None:
        if not self._readable(conn, cmd.room, cmd.id):
            return
        page = await self.backplane.history(cmd.room, cmd.since, cmd.limit)
        messages = b",".join(page.messages)
        head = p.encode({"type": "history", "id": cmd.id, "room": cmd.room,
                         "epoch": page.epoch, "offset": page.offset})
        conn.send(p.text_frame(head[:-1] + b',"messages":[' + messages + b"]}"))

    async def _presence(self, conn: Conn, cmd: p.Presence) -> None:
        if not self._readable(conn, cmd.room, cmd.id):
            return
        users = await self.backplane.presence(cmd.room)
        conn.reply({"type": "presence", "id": cmd.id, "room": cmd.room, "users": users})

    def _refresh(self, conn: Conn, cmd: p.Refresh) -> None:
        try:
            principal = self.authenticate(cmd.token)
        except AuthError as exc:
            conn.error(p.FORBIDDEN, f"refresh refused: {exc}", cmd.id)
            return
        if principal.user_id != conn.principal.user_id:
            conn.error(p.FORBIDDEN, "refresh refused: the token is for another user", cmd.id)
            return
        conn.principal = principal
        self._schedule_expiry(conn)
        conn.reply({"type": "refreshed", "id": cmd.id,
                    "expires_at": p.iso_time(principal.expires_at)[:-5] + "Z"})

    async def _custom(self, conn: Conn, cmd: p.CustomCommand) -> None:
        handler = self.commands[cmd.type]
        try:
            data = await handler(conn.principal, cmd.payload)
        except Exception:
            self.metrics.handler_errors += 1
            event("command handler failed", logging.ERROR, exc_info=True,
                  command=cmd.type, conn=conn.id)
            conn.error(p.INTERNAL, f"the {cmd.type!r} handler failed", cmd.id)
            return
        try:
            conn.reply({"type": cmd.type, "id": cmd.id, "data": data})
        except (TypeError, RecursionError, msgspec.EncodeError):  # too deep is not JSON either
            conn.error(p.INTERNAL, f"the {cmd.type!r} handler returned data that is not JSON",
                       cmd.id)

    # ------------------------------------------------------------ delivery (Sink)
    def deliver(self, room: str, offset: int, payload: bytes, event: str | None) -> None:
        """Queue one message (framed once) to every local subscription that admits it."""
        if room not in self.table.rooms:
            return
        frame = p.text_frame(payload)
        count = 0
        direct = False
        now = trio.current_time()
        for sub in self.table.recipients(room, event, _Lazy(payload)):
            if sub.floor is not None:
                if offset <= sub.floor:
                    continue
                sub.floor = None
            conn = sub.subscriber
            if sub.held is not None:
                sub.held.append((offset, frame))
                if len(sub.held) > self.settings.max_pending:
                    conn.close(p.TOO_SLOW, "too slow: outgoing queue overflowed")
                continue
            conn.send(frame)
            if not conn.pending:
                direct = True  # written already: timed once, below
            elif conn.sample_at is None:
                conn.sample_at = now
            count += 1
        self.metrics.deliveries += count
        if direct:
            self.metrics.observe_latency(trio.current_time() - now)

    def presence_changed(
        self, room: str, user_id: str, info: dict[str, Any] | None, joined: bool
    ) -> None:
        watchers = self.table.watchers(room)
        if not watchers:
            return
        body: dict[str, Any] = {"type": "joined" if joined else "left", "room": room,
                                "user_id": user_id}
        if joined:
            body["info"] = info or {}
        frame = p.text_frame(p.encode(body))
        for sub in watchers:
            sub.subscriber.send(frame)

    def reset(self, room: str, epoch: str, offset: int, missed: tuple[int, int] | None
              ) -> None:
        """Tell every live subscriber of `room` that its stream changed (§17)."""
        body: dict[str, Any] = {"type": "reset", "room": room, "epoch": epoch, "offset": offset}
        if missed is not None:
            body["missed"] = {"from": missed[0], "to": missed[1]}
            self.metrics.drops["undeliverable"] += missed[1] - missed[0] + 1
        self.metrics.resets += 1
        frame = p.text_frame(p.encode(body))
        for sub in list(self.table.rooms.get(room, {}).values()):
            sub.floor = None
            if sub.held is not None:
                sub.held.append((0, frame))
            else:
                sub.subscriber.send(frame)

    def resumed(self) -> None:
        """The backplane reconnected: its offsets may have started over (data loss), so no
        subscription may skip messages by an offset it saw before."""
        for subs in self.table.rooms.values():
            for sub in subs.values():
                sub.floor = None

    def control(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "disconnect":
            code = int(payload.get("code") or p.NORMAL)
            if not (code == p.NORMAL or 4000 <= code <= 4999):
                code = p.NORMAL  # as disconnect_user allows: never a code the wire refuses
            reason = str(payload.get("reason") or "disconnected by the server")
            for conn in list(self.by_user.get(str(payload.get("user_id")), ())):
                conn.close(code, reason)
        elif kind == "revoke":
            jti = str(payload["jti"])
            expires_at = payload.get("expires_at")
            # Kept until the token could no longer pass anyway: its exp plus the leeway.
            keep_until = (float(expires_at) + self.settings.jwt_leeway
                          if expires_at is not None else None)
            self.revocations.revoke(jti, self.wall(), keep_until)
            for conn in list(self.conns.values()):
                if conn.principal.jti == jti:
                    conn.close(p.UNAUTHORIZED, "token revoked")

    # ------------------------------------------------------------ the embedding API
    async def _publish(
        self, room: str, data: bytes, event: str | None, sender: str | None,
        idempotency_key: str | None = None,
    ) -> Any:
        template = p.message_template(room, data, event, sender, time.time())
        result = await self.backplane.publish(room, template, event, idempotency_key)
        self.metrics.publishes += 1
        return result

    async def publish(
        self, room: str, data: Any, event: str | None = None,
        idempotency_key: str | None = None,
    ) -> int:
        """Publish server-side (`sender` null) into a room; returns the message's offset."""
        offset, _duplicate = await self.publish_result(room, data, event, idempotency_key)
        return offset

    async def publish_result(
        self, room: str, data: Any, event: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[int, bool]:
        """Like publish, also saying whether it was a repeat of an idempotency_key."""
        _check_room(room)
        result = await self._publish(room, p.encode(data), event, None, idempotency_key)
        return int(result.offset), bool(result.duplicate)

    async def broadcast(
        self, rooms: list[str], data: Any, event: str | None = None
    ) -> dict[str, int]:
        """Publish the same data into several rooms; returns each room's offset."""
        for room in rooms:
            _check_room(room)
        encoded = p.encode(data)
        out = {}
        for room in dict.fromkeys(rooms):
            out[room] = int((await self._publish(room, encoded, event, None)).offset)
        return out

    async def send_to_user(self, user_id: str, data: Any, event: str | None = None) -> int:
        """Publish into the user's personal room `user:<id>` (every node, with history)."""
        return await self.publish(f"user:{user_id}", data, event)

    def send_to_connection(self, connection_id: str, data: Any, event: str | None = None) -> bool:
        """Send a `direct` frame to one connection of this node; False if it is not here."""
        conn = self.conns.get(connection_id)
        if conn is None:
            return False
        conn.reply({"type": "direct", "event": event, "data": data,
                    "ts": p.iso_time(time.time())})
        return True

    async def disconnect_user(
        self, user_id: str, code: int = p.NORMAL, reason: str = "disconnected by the server"
    ) -> int:
        """Close every connection of a user on every node; returns how many were here."""
        if not (code == p.NORMAL or 4000 <= code <= 4999):
            raise ValueError(f"close code {code} cannot be sent: use 1000 or 4000-4999")
        here = len(self.by_user.get(user_id, ()))
        await self.backplane.send_control(
            "disconnect", {"user_id": user_id, "code": code, "reason": reason}
        )
        return here

    async def revoke(self, jti: str, expires_at: float | None = None) -> None:
        """Refuse a token id from now on, on every node, and close its live connections."""
        await self.backplane.send_control("revoke", {"jti": jti, "expires_at": expires_at})

    def stats(self) -> dict[str, Any]:
        return {
            "connections": len(self.conns),
            "users": len(self.by_user),
            "rooms": len(self.table.rooms),
            "node": self.settings.node,
            "backplane": self.backplane.name,
            "ready": self.ready,
        }

    # ------------------------------------------------------------ the sweeper
    def _schedule_expiry(self, conn: Conn) -> None:
        """Remember when this connection's token runs out, and wake the sweeper if sooner."""
        at = conn.principal.expires_at + self.settings.jwt_leeway - self._wall_base
        heapq.heappush(self._expiries, (at, next(self._expiry_seq), conn))
        if self._wake is not None and at < self._wake.deadline:
            self._wake.deadline = at
        self._compact_expiries()

    def _compact_expiries(self) -> None:
        """Drop entries of closed connections and of refreshed tokens once they outnumber the
        live ones, so the heap (and the Conns it holds) stays proportional to live connections."""
        if len(self._expiries) <= 2 * len(self.conns) + 64:
            return
        leeway, base = self.settings.jwt_leeway, self._wall_base
        current = {  # one entry per live connection: the one for its current token
            entry[2].id: entry for entry in self._expiries
            if self.conns.get(entry[2].id) is entry[2]
            and entry[0] == entry[2].principal.expires_at + leeway - base
        }
        self._expiries = list(current.values())
        heapq.heapify(self._expiries)

    def _expire_tokens(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, _, conn = heapq.heappop(self._expiries)
            if conn.id not in self.conns or conn.close_code is not None:
                continue
            if conn.principal.expires_at + self.settings.jwt_leeway <= self.wall() + 1e-6:
                conn.close(p.UNAUTHORIZED, "token expired")
            # else a refresh pushed a later entry; this one is stale

    def _sweep(self, now: float, ping: bool) -> None:
        """Close silent connections (4408) and ping the others; one pass over all."""
        timeout = self.settings.heartbeat_timeout
        for conn in list(self.conns.values()):
            if now - conn.last_seen > timeout:
                conn.close(p.HEARTBEAT_TIMEOUT, "heartbeat timeout")
            elif ping:
                conn.send(p.PING_FRAME)
        self.revocations.prune(self.wall())

    async def _sweeper(self) -> None:
        s = self.settings
        period = min(s.heartbeat_interval, s.heartbeat_timeout / 3)
        now = trio.current_time()
        next_sweep = now + period
        next_ping = now + s.heartbeat_interval
        while True:
            # Wake for pings too: when timeout/3 < interval, sweeps alone would ping late.
            with trio.move_on_at(min(next_sweep, next_ping)) as wake:
                self._wake = wake
                if self._expiries:
                    wake.deadline = min(wake.deadline, self._expiries[0][0])
                await trio.sleep_forever()
            self._wake = None
            now = trio.current_time()
            self._expire_tokens(now)
            if now >= next_sweep or now >= next_ping:
                ping = now >= next_ping
                if ping:
                    next_ping = now + s.heartbeat_interval
                self._sweep(now, ping)
                next_sweep = now + period


def _admits(sub: Subscription[Conn], payload: bytes) -> bool:
    """Whether a stored message frame passes a subscription's `events`/`where` filters."""
    message: Any = msgspec.json.decode(payload)
    return sub.admits(message.get("event"), lambda: message.get("data"))


def _check_room(room: str) -> None:
    """The embedding API's room-name check: a ValueError that states the rule."""
    if not p.valid_room(room):
        raise ValueError(f"{room!r} is not a valid room name (1-200 of A-Z a-z 0-9 _-:.@/)")


class _Unset:
    pass


_UNSET: Any = _Unset()


class _Lazy:
    """Decodes a payload's `data` the first time a filter asks, once per message."""

    __slots__ = ("_payload", "_value")

    def __init__(self, payload: bytes) -> None:
        self._payload = payload
        self._value: Any = _UNSET

    def __call__(self) -> Any:
        if self._value is _UNSET:
            self._value = p.message_data(self._payload)
        return self._value


@asynccontextmanager
async def open_router(
    settings: Settings | None = None, backplane: Backplane | None = None
) -> AsyncIterator[Router]:
    """A running Router (its backplane and sweeper) for as long as the block lasts."""
    router = Router(settings or Settings(), backplane)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        try:
            yield router
        finally:
            nursery.cancel_scope.cancel()
