"""Peer: a server on the `websockets` library (asyncio) that fans out with its `broadcast()`.

`broadcast()` writes one message to many connections without awaiting any of them, the
library's recommended way to fan out. It speaks the harness's minimal protocol: `connected`
first, then `subscribe` -> `subscribed`, `publish` -> `published` plus `message` frames
shaped like roomcast's. No authentication: the token in the query string is ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

rooms: dict[str, set[ServerConnection]] = {}
offsets: dict[str, int] = {}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def handler(ws: ServerConnection) -> None:
    await ws.send('{"type":"connected"}')
    mine: set[str] = set()
    try:
        async for text in ws:
            command: dict[str, Any] = json.loads(text)
            kind = command.get("type")
            if kind == "subscribe":
                names = command.get("rooms") or []
                for room in names:
                    rooms.setdefault(room, set()).add(ws)
                    mine.add(room)
                await ws.send(_dumps({"type": "subscribed", "id": command.get("id"),
                                      "rooms": {r: {"ok": True, "offset": offsets.get(r, 0)}
                                                for r in names}}))
            elif kind == "publish":
                room = command["room"]
                offset = offsets[room] = offsets.get(room, 0) + 1
                message = _dumps({"type": "message", "room": room, "offset": offset,
                                  "event": command.get("event"), "data": command.get("data"),
                                  "sender": None, "ts": time.time()}).encode()
                broadcast(rooms.get(room, ()), message, text=True)
                await ws.send(_dumps({"type": "published", "id": command.get("id"),
                                      "room": room, "offset": offset}))
    except ConnectionClosed:
        pass  # a client that resets is not an error
    finally:
        for room in mine:
            members = rooms.get(room)
            if members is not None:
                members.discard(ws)
                if not members:
                    del rooms[room]


async def main(port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=1 << 20):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
