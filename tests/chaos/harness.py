"""What the chaos tests run and check: independent WebSocket subscribers that record every
frame they get, publishers through `POST /api/publish` that record every 200 answer, and
the check of protocol §17 over both records.

The check: every accepted publish (answered 200) is received by every subscriber (each is
subscribed from before the first publish to the end, across reconnects with `since`), or
that subscriber was told it would not get it: a `missed` range holding its offset in its
stream, a `reset` to another stream, or a `recovered: false`, received after the publish
began. Anything else is a silent loss. A message's stream (epoch) comes from the publish
answer when it carries one (§17), else from any subscriber that received it; a message
nobody received and whose answer names no epoch is judged loosely (any later reset or
recovery of the room covers it) and counted apart.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_websocket

from tests.support import WAIT, ServerProcess, make_token


@dataclass(frozen=True, slots=True)
class Accepted:
    """One publish answered 200."""

    room: str
    id: int
    offset: int
    epoch: str | None
    started: float  # trio clock, when the request was sent


@dataclass(frozen=True, slots=True)
class Notice:
    """A `reset`, or a `subscribed` entry after a reconnect, as one subscriber got it."""

    room: str
    kind: str  # "reset" or "recovery"
    epoch: str
    offset: int
    missed: tuple[int, int] | None
    recovered: bool
    at: float


@dataclass(slots=True)
class Totals:
    """What a run (or several) came to; `silently_lost`, `duplicates` and `gaps` must be 0."""

    accepted: int = 0
    refused: int = 0  # publishes not answered 200 (Redis or the node was down)
    expected: int = 0  # accepted x subscribers
    delivered: int = 0
    covered_by_reset: int = 0
    covered_by_missed: int = 0
    covered_by_recovery: int = 0
    covered_loosely: int = 0  # stream unknown: nobody received it, the answer had no epoch
    silently_lost: int = 0
    duplicates: int = 0
    gaps: int = 0  # offsets that jumped or went back within a stream without a notice
    resets: int = 0
    redis_restarts: int = 0
    node_kills: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, other: Totals) -> None:
        for name in self.__dataclass_fields__:
            if name != "examples":
                setattr(self, name, getattr(self, name) + getattr(other, name))
        self.examples += other.examples[:5]

    def line(self) -> str:
        covered = (self.covered_by_reset + self.covered_by_missed + self.covered_by_recovery
                   + self.covered_loosely)
        return (f"redis restarts {self.redis_restarts}, node kills {self.node_kills}: "
                f"accepted {self.accepted} (refused {self.refused}), expected deliveries "
                f"{self.expected}, delivered {self.delivered}, covered {covered} (reset "
                f"{self.covered_by_reset}, missed {self.covered_by_missed}, recovery "
                f"{self.covered_by_recovery}, loosely {self.covered_loosely}), silently lost "
                f"{self.silently_lost}, duplicates {self.duplicates}, gaps {self.gaps}, "
                f"resets received {self.resets}")


class Subscriber:
    """One client, subscribed to `rooms` for the whole run: on a lost connection it connects
    again (to the next node in turn) and resumes with `since`."""

    def __init__(self, name: str, rooms: list[str], urls: list[str]) -> None:
        self.name = name
        self.rooms = rooms
        self.urls = urls
        self.token = make_token(name, rooms=["*"])
        self.received: dict[int, list[tuple[str, str, int]]] = {}
        self.notices: list[Notice] = []
        self.gaps: list[str] = []
        self.pos: dict[str, tuple[str, int]] = {}  # room -> (epoch, last offset)
        self.expect: dict[str, int] = {}  # room -> the next offset due
        self.ready = trio.Event()
        self.connections = 0

    async def run(self) -> None:
        """Stay subscribed until cancelled."""
        for turn in itertools.count():
            url = f"{self.urls[turn % len(self.urls)]}?token={self.token}"
            try:
                async with trio_websocket.open_websocket_url(
                        url, connect_timeout=WAIT, disconnect_timeout=1) as ws:
                    self.connections += 1
                    await self._session(ws)
            except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed,
                    trio_websocket.ConnectionRejected, trio.TooSlowError,
                    trio.BrokenResourceError):
                pass
            await trio.sleep(0.1)  # then the next node

    async def _session(self, ws: trio_websocket.WebSocketConnection) -> None:
        frame = json.loads(await ws.get_message())
        assert frame["type"] == "connected", frame
        command: dict[str, Any] = {"type": "subscribe", "id": "s", "rooms": self.rooms}
        since = {room: {"offset": offset, "epoch": epoch}
                 for room, (epoch, offset) in self.pos.items()}
        if since:
            command["since"] = since
        await ws.send_message(json.dumps(command))
        while True:
            frame = json.loads(await ws.get_message())
            kind = frame.get("type")
            if kind == "message":
                self._message(frame)
            elif kind == "reset":
                self._reset(frame)
            elif kind == "subscribed" and not self._subscribed(frame, since):
                return  # a room could not be subscribed (Redis away): connect again

    def _subscribed(self, frame: dict[str, Any], since: dict[str, Any]) -> bool:
        now = trio.current_time()
        entries = frame["rooms"]
        if not all(entry.get("ok") for entry in entries.values()):
            return False
        for room, entry in entries.items():
            epoch, offset = entry["epoch"], entry["offset"]
            missed = entry.get("missed")
            gone = (missed["from"], missed["to"]) if missed else None
            if room not in since:  # the first subscription: from here on
                self.pos[room], self.expect[room] = (epoch, offset), offset + 1
                continue
            recovered = bool(entry.get("recovered"))
            self.notices.append(Notice(room, "recovery", epoch, offset, gone, recovered, now))
            if recovered:
                after = since[room]["offset"]
            elif gone is not None:
                after = gone[1]
            else:
                after = offset
            self.pos[room], self.expect[room] = (epoch, after), after + 1
        self.ready.set()
        return True

    def _reset(self, frame: dict[str, Any]) -> None:
        room, epoch, offset = frame["room"], frame["epoch"], frame["offset"]
        missed = frame.get("missed")
        gone = (missed["from"], missed["to"]) if missed else None
        self.notices.append(
            Notice(room, "reset", epoch, offset, gone, False, trio.current_time()))
        self.pos[room], self.expect[room] = (epoch, offset), offset + 1

    def _message(self, frame: dict[str, Any]) -> None:
        room, offset = frame["room"], frame["offset"]
        epoch = self.pos[room][0]
        due = self.expect.get(room)
        if due is not None and offset != due:
            self.gaps.append(f"{self.name} {room} {epoch}: offset {offset}, {due} was due")
        self.pos[room], self.expect[room] = (epoch, offset), offset + 1
        self.received.setdefault(frame["data"]["id"], []).append((room, epoch, offset))


async def http(port: int, method: str, path: str, body: Any = None, api_key: str = "",
               timeout: float = WAIT) -> tuple[int, Any]:
    """One HTTP/1.1 request over a fresh socket; (status, decoded JSON body or None)."""
    data = b"" if body is None else json.dumps(body).encode()
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(head + data)
            raw = b""
            while b"\r\n\r\n" not in raw:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise OSError("closed before the answer's head")
                raw += chunk
            top, _, rest = raw.partition(b"\r\n\r\n")
            lines = top.decode("latin-1").split("\r\n")
            length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                           if line.lower().startswith("content-length:")), 0)
            while len(rest) < length:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise OSError("closed before the answer's body")
                rest += chunk
    return int(lines[0].split()[1]), json.loads(rest[:length]) if length else None


class Publishers:
    """`tasks` publishers spread over the nodes, each sending one publish every `interval`
    s to its node (to the rooms in turn), recording every 200 answer, until `stop` is set."""

    def __init__(self, nodes: list[ServerProcess], rooms: list[str]) -> None:
        self.nodes = nodes
        self.rooms = rooms
        self.accepted: list[Accepted] = []
        self.refused = 0
        self.stop = trio.Event()
        self._ids = itertools.count(1)

    async def run(self, tasks: int = 8, interval: float = 0.02) -> None:
        async with trio.open_nursery() as nursery:
            for k in range(tasks):
                nursery.start_soon(self._publisher, k, interval)

    async def _publisher(self, k: int, interval: float) -> None:
        for turn in itertools.count(k):
            if self.stop.is_set():
                return
            node = self.nodes[k % len(self.nodes)]  # a stalled node holds up its own only
            room = self.rooms[turn % len(self.rooms)]
            ident = next(self._ids)
            started = trio.current_time()
            try:
                status, body = await http(
                    node.http_port, "POST", "/api/publish",
                    {"room": room, "data": {"id": ident}}, node.api_key)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, ValueError):
                status, body = 0, None
            if status == 200:
                self.accepted.append(
                    Accepted(room, ident, body["offset"], body.get("epoch"), started))
            else:
                self.refused += 1
            await trio.sleep(interval)


def judge(publishers: Publishers, subscribers: list[Subscriber]) -> Totals:
    """The check of §17 over what was recorded (see the module's docstring)."""
    totals = Totals(accepted=len(publishers.accepted), refused=publishers.refused)
    epochs: dict[int, str] = {}
    for sub in subscribers:
        totals.gaps += len(sub.gaps)
        totals.examples += sub.gaps[:3]
        totals.resets += sum(1 for n in sub.notices if n.kind == "reset")
        for ident, got in sub.received.items():
            epochs.setdefault(ident, got[0][1])
    for m in publishers.accepted:
        epoch = m.epoch or epochs.get(m.id)
        for sub in subscribers:
            totals.expected += 1
            got = sub.received.get(m.id)
            if got:
                totals.delivered += 1
                totals.duplicates += len(got) - 1
                continue
            how = _covered(sub, m, epoch)
            if how is None:
                totals.silently_lost += 1
                if len(totals.examples) < 10:
                    totals.examples.append(f"{sub.name} never got {m} (stream {epoch})")
            else:
                setattr(totals, f"covered_{how}", getattr(totals, f"covered_{how}") + 1)
    return totals


def _covered(sub: Subscriber, m: Accepted, epoch: str | None) -> str | None:
    """How `sub` was told it would not get `m`, or None when it was not."""
    for n in sub.notices:
        if n.room != m.room or n.at < m.started:
            continue
        in_range = n.missed is not None and n.missed[0] <= m.offset <= n.missed[1]
        if epoch is None:
            if in_range or n.kind == "reset" or not n.recovered:
                return "loosely"
        elif in_range and n.epoch == epoch:
            return "by_missed"
        elif n.kind == "reset" and n.epoch != epoch:
            return "by_reset"
        elif n.kind == "recovery" and not n.recovered and (
                n.epoch != epoch or m.offset <= n.offset):
            return "by_recovery"
    return None
