"""Peer: the FastAPI + uvicorn server an application writes before it has roomcast.

The pattern from FastAPI's WebSocket guide: an in-memory `ConnectionManager` holding each
room's sockets, a WebSocket endpoint clients subscribe through, and a `POST /api/publish`
endpoint (a pydantic body, a bearer key) that awaits `send_text` on each of the room's
sockets. `POST /api/batch` runs publishes in order, like roomcast's. It speaks the
harness's minimal WebSocket protocol (`connected`, `subscribe` -> `subscribed`, `message`
frames shaped like roomcast's) on `/ws`; the token in the query string is ignored.
One port serves both.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

API_KEY = "bench-api-key-0123456789"  # the same as benchmarks.api_bench.API_KEY


class PublishBody(BaseModel):
    room: str
    data: Any
    event: str | None = None


class Command(BaseModel):
    method: str
    params: dict[str, Any]


class BatchBody(BaseModel):
    commands: list[Command]


class ConnectionManager:
    """Each room's live sockets and its last offset."""

    def __init__(self) -> None:
        self.rooms: dict[str, set[WebSocket]] = {}
        self.offsets: dict[str, int] = {}

    def join(self, room: str, ws: WebSocket) -> None:
        self.rooms.setdefault(room, set()).add(ws)

    def leave(self, rooms: set[str], ws: WebSocket) -> None:
        for room in rooms:
            members = self.rooms.get(room)
            if members is not None:
                members.discard(ws)
                if not members:
                    del self.rooms[room]

    async def publish(self, body: PublishBody) -> dict[str, Any]:
        offset = self.offsets[body.room] = self.offsets.get(body.room, 0) + 1
        message = json.dumps({"type": "message", "room": body.room, "offset": offset,
                              "event": body.event, "data": body.data, "sender": None,
                              "ts": time.time()}, separators=(",", ":"))
        for ws in list(self.rooms.get(body.room, ())):
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await ws.send_text(message)
        return {"offset": offset, "duplicate": False}


app = FastAPI()
manager = ConnectionManager()


def _check(authorization: str | None) -> None:
    if authorization != f"Bearer {API_KEY}":
        raise HTTPException(status_code=401, detail="the API key is wrong")


@app.post("/api/publish")
async def publish(body: PublishBody, authorization: str | None = Header(default=None)
                  ) -> dict[str, Any]:
    _check(authorization)
    return await manager.publish(body)


@app.post("/api/batch")
async def batch(body: BatchBody, authorization: str | None = Header(default=None)
                ) -> dict[str, Any]:
    _check(authorization)
    replies: list[dict[str, Any]] = []
    for command in body.commands:
        if command.method != "publish":
            replies.append({"error": {"error": "bad_request", "message": "publish only"}})
            continue
        replies.append({"result": await manager.publish(PublishBody(**command.params))})
    return {"replies": replies}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.websocket("/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text('{"type":"connected"}')
    mine: set[str] = set()
    try:
        while True:
            command = json.loads(await ws.receive_text())
            if command.get("type") == "subscribe":
                names = command.get("rooms") or []
                for room in names:
                    manager.join(room, ws)
                    mine.add(room)
                await ws.send_text(json.dumps({
                    "type": "subscribed", "id": command.get("id"),
                    "rooms": {r: {"ok": True, "offset": manager.offsets.get(r, 0)}
                              for r in names}}, separators=(",", ":")))
    except WebSocketDisconnect:
        pass
    finally:
        manager.leave(mine, ws)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
