"""Peer: the naive trio-websocket ConnectionManager (the seeds' design).

One task per connection; a publish awaits `send_message` to each subscriber in turn, then
acks. It speaks the harness's minimal protocol: `connected` first, then `subscribe` ->
`subscribed`, `publish` -> `published` plus `message` frames shaped like roomcast's. No
authentication: the token in the query string is ignored.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket


class ConnectionManager:
    """Rooms to sets of sockets; a publish sends to each subscriber, one after another."""

    def __init__(self) -> None:
        self.rooms: dict[str, set[WebSocketConnection]] = {}
        self.offsets: dict[str, int] = {}

    async def handle(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message('{"type":"connected"}')
        mine: set[str] = set()
        try:
            while True:
                try:
                    text = await ws.get_message()
                except ConnectionClosed:
                    return
                command: dict[str, Any] = json.loads(text)
                kind = command.get("type")
                if kind == "subscribe":
                    rooms = command.get("rooms") or []
                    for room in rooms:
                        self.rooms.setdefault(room, set()).add(ws)
                        mine.add(room)
                    reply = {"type": "subscribed", "id": command.get("id"),
                             "rooms": {r: {"ok": True, "offset": self.offsets.get(r, 0)}
                                       for r in rooms}}
                    await ws.send_message(json.dumps(reply, separators=(",", ":")))
                elif kind == "publish":
                    await self.publish(ws, command)
        except ConnectionClosed:
            return
        finally:
            for room in mine:
                members = self.rooms.get(room)
                if members is not None:
                    members.discard(ws)
                    if not members:
                        del self.rooms[room]

    async def publish(self, ws: WebSocketConnection, command: dict[str, Any]) -> None:
        room = command["room"]
        offset = self.offsets[room] = self.offsets.get(room, 0) + 1
        message = json.dumps({"type": "message", "room": room, "offset": offset,
                              "event": command.get("event"), "data": command.get("data"),
                              "sender": None, "ts": time.time()}, separators=(",", ":"))
        for member in list(self.rooms.get(room, ())):
            try:
                await member.send_message(message)
            except ConnectionClosed:
                self.rooms.get(room, set()).discard(member)
        await ws.send_message(json.dumps({"type": "published", "id": command.get("id"),
                                          "room": room, "offset": offset},
                                         separators=(",", ":")))


async def main(port: int) -> None:
    manager = ConnectionManager()
    await serve_websocket(manager.handle, "127.0.0.1", port, ssl_context=None,
                          max_message_size=1 << 20)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    try:
        trio.run(main, parser.parse_args().port)
    except KeyboardInterrupt:
        sys.exit(0)
