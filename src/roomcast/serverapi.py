"""The Router's API for the application: publishing, broadcasting, moving and closing users'
connections, revoking tokens, reading presence and history (the embedding API, which the
HTTP server API calls too). Every call goes through the backplane, so it acts on every node.
"""

from __future__ import annotations

from typing import Any

import trio

from roomcast import protocol as p
from roomcast.backplane import Backplane, BackplaneUnavailable
from roomcast.codes import CloseCode, application_close_code
from roomcast.core import RoutingCore
from roomcast.metrics import Metrics
from roomcast.streams import HistoryPage, PublishResult


class ServerApi:
    """Mixed into the Router (`roomcast.router.Router`), which provides these attributes."""

    core: RoutingCore
    backplane: Backplane
    metrics: Metrics

    async def publish(self, room: str, data: Any, event: str | None = None,
                      idempotency_key: str | None = None) -> int:
        """Publish server-side (`sender` null) into a room; returns the message's offset."""
        offset, _duplicate = await self.publish_result(room, data, event, idempotency_key)
        return offset

    async def publish_result(self, room: str, data: Any, event: str | None = None,
                             idempotency_key: str | None = None) -> tuple[int, bool]:
        """Like publish, also saying whether it was a repeat of an idempotency_key."""
        result = await self.publish_message(room, data, event, idempotency_key)
        return result.offset, result.duplicate

    async def publish_message(self, room: str, data: Any, event: str | None = None,
                              idempotency_key: str | None = None) -> PublishResult:
        """Publish server-side; the message's offset, the epoch of the stream it went into
        (§17), and whether it repeated an idempotency_key."""
        p.check_room(room)
        return await self._publish(room, p.encode(data), event, idempotency_key)

    async def _publish(self, room: str, data: bytes, event: str | None,
                       idempotency_key: str | None = None) -> PublishResult:
        template = self.core.template(room, data, event, None, trio.current_time())
        result = await self.backplane.publish(room, template, event, idempotency_key)
        self.metrics.publishes += 1
        return result

    async def publish_messages(self, room: str,
                               items: list[tuple[Any, str | None, str | None]]
                               ) -> list[PublishResult]:
        """Several (data, event, idempotency_key) into one room at once (a batch): in
        order, with consecutive offsets for the new ones."""
        p.check_room(room)
        now = trio.current_time()
        messages = [(self.core.template(room, p.encode(data), event, None, now), event, key)
                    for data, event, key in items]
        results = await self.backplane.publish_many(room, messages)
        self.metrics.publishes += len(results)
        return results

    async def broadcast(self, rooms: list[str], data: Any, event: str | None = None
                        ) -> dict[str, int]:
        """Publish the same data into several rooms; returns each room's offset."""
        results = await self.broadcast_messages(rooms, data, event)
        return {room: result.offset for room, result in results.items()}

    async def broadcast_messages(self, rooms: list[str], data: Any, event: str | None = None
                                 ) -> dict[str, PublishResult]:
        """Like broadcast, with each room's offset and epoch (§17)."""
        for room in rooms:
            p.check_room(room)
        encoded = p.encode(data)
        return {room: await self._publish(room, encoded, event) for room in dict.fromkeys(rooms)}

    async def send_to_user(self, user_id: str, data: Any, event: str | None = None) -> int:
        """Publish into the user's personal room `user:<id>` (every node, with history)."""
        return await self.publish(f"user:{user_id}", data, event)

    async def disconnect_user(self, user_id: str, code: int = CloseCode.NORMAL,
                              reason: str = "disconnected by the server") -> int:
        """Close every connection of a user on every node; returns how many were here."""
        if not application_close_code(code):
            raise ValueError(f"close code {code} cannot be sent: use 1000 or 4000-4999")
        here = len(self.core.by_user.get(user_id, ()))
        await self.backplane.send_control(
            "disconnect", {"user_id": user_id, "code": code, "reason": reason})
        return here

    async def subscribe_user(self, user_id: str, room: str, connection_id: str | None = None
                             ) -> dict[str, int]:
        """Subscribe every live connection of a user (or one of them) to a room, on every
        node, whatever their patterns say (§12); counts this node's connections."""
        return {"subscribed": await self._server_side("subscribe", user_id, room,
                                                       connection_id)}

    async def unsubscribe_user(self, user_id: str, room: str, connection_id: str | None = None
                               ) -> dict[str, int]:
        """The reverse of subscribe_user (§12)."""
        return {"unsubscribed": await self._server_side("unsubscribe", user_id, room,
                                                         connection_id)}

    async def _server_side(self, kind: str, user_id: str, room: str,
                           connection_id: str | None) -> int:
        p.check_room(room)
        here = sum(1 for peer in self.core.by_user.get(user_id, ())
                   if connection_id is None or peer.id == connection_id)
        payload: dict[str, Any] = {"user_id": user_id, "room": room}
        if connection_id is not None:
            payload["connection_id"] = connection_id
        await self.backplane.send_control(kind, payload)
        return here

    async def revoke(self, jti: str, expires_at: float | None = None) -> None:
        """Refuse a token id from now on, on every node, and close its live connections."""
        await self.backplane.send_control("revoke", {"jti": jti, "expires_at": expires_at})

    async def presence(self, room: str) -> list[dict[str, Any]]:
        """Who is in `room` across every node."""
        p.check_room(room)
        users: list[dict[str, Any]] = await self.backplane.presence(room)
        return users

    async def history(self, room: str, since: int | None = None, limit: int = 100
                      ) -> HistoryPage:
        """The room's held messages after `since` (the first `limit`), or the newest `limit`."""
        p.check_room(room)
        return await self.backplane.history(room, since, limit)

    async def cluster_stats(self) -> dict[str, Any] | None:
        """Cluster-wide counts from the backplane; None while it is unreachable."""
        try:
            return await self.backplane.stats()
        except BackplaneUnavailable:
            return None
