"""The Python client for roomcast, on Trio: one logical connection that survives reconnects.

    async with roomcast.client.connect("ws://127.0.0.1:8000/ws", token=get_token) as client:
        await client.subscribe("project:12")
        await client.publish("project:12", {"task_id": 7}, event="task.created")
        async for event in client.messages():
            print(event)

It follows the server's close codes (some mean "never come back"), reconnects with
exponential backoff and full jitter, resubscribes with `since` so nothing still in history
is lost, follows a room's stream across epochs (the server's `reset` becomes a Reset
event: reload), resends unanswered publishes with their idempotency key, refreshes the
token before it expires and pings to notice a dead link. See docs/clients.md.

For asyncio, `roomcast.client.aio.connect(...)` gives the same client with the same
methods, on the `websockets` library (the `client` extra).

Inside, the pure core both shells share: `events` (what the app sees), `errors`,
`backoff` (close codes and delays), `tokens`, `session` (rooms and positions) and `rules`
(every other decision: each frame in, each close, the token's refresh). The Trio shell:
`transport` (the WebSocket IO), `lifecycle` (the connection loop), `api` (the Client and
connect). The asyncio shell: `aiolink`, `aiolife`, `aio`.
"""

from __future__ import annotations

from roomcast.client.api import Client, connect
from roomcast.client.backoff import DEAD_LINK, STOP_CODES, Backoff
from roomcast.client.errors import (
    CommandError,
    ConnectError,
    ConnectionLost,
    Disconnected,
    RequestTimeout,
    RoomcastError,
)
from roomcast.client.events import (
    CloseInfo,
    Direct,
    Event,
    HistoryPage,
    Joined,
    Left,
    Message,
    Position,
    PresenceUser,
    PublishResult,
    Recovery,
    Reset,
    State,
    SubscribeResult,
)
from roomcast.client.tokens import TokenSource, token_expiry

__all__ = [
    "DEAD_LINK",
    "STOP_CODES",
    "Backoff",
    "Client",
    "CloseInfo",
    "CommandError",
    "ConnectError",
    "ConnectionLost",
    "Direct",
    "Disconnected",
    "Event",
    "HistoryPage",
    "Joined",
    "Left",
    "Message",
    "Position",
    "PresenceUser",
    "PublishResult",
    "Recovery",
    "RequestTimeout",
    "Reset",
    "RoomcastError",
    "State",
    "SubscribeResult",
    "TokenSource",
    "connect",
    "token_expiry",
]
