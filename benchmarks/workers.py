"""The load-generator processes: subscriber fleets, a publisher, reconnecting clients and a
client that stops reading. Each runs one epoll loop, pinned to a generator core.

They talk to the runner through a `Control`: events to start and stop, a queue for
("ready" | "subscribed" | "result" | "error", worker id, payload) messages, and a shared
array where receivers post how many messages they have, for flow control and progress.
Every loop here is bounded by a deadline.
"""

from __future__ import annotations

import heapq
import json
import random
import time
import traceback
from array import array
from dataclasses import dataclass
from typing import Any

import jwt

from benchmarks.servers import SECRET, pin, raise_nofile
from benchmarks.wsclient import (
    CONNECTED,
    ERROR,
    PUBLISHED,
    SAMPLE_ALL,
    SAMPLE_CHUNK,
    SAMPLE_NONE,
    SUBSCRIBED,
    Conn,
    Loop,
    client_frame,
    stamp_payload,
)

SAMPLE_MODES = {"none": SAMPLE_NONE, "all": SAMPLE_ALL, "chunk": SAMPLE_CHUNK}
SETTLE_TIMEOUT = 120.0  # the longest a fleet may take to connect and subscribe
HOLD_TIMEOUT = 900.0  # the longest a worker stays up waiting for `stop`


@dataclass
class Control:
    """What the runner shares with every worker of one scenario."""

    connect: Any  # multiprocessing Event: start connecting
    go: Any  # Event: start publishing / stalling
    stop: Any  # Event: finish, report and exit
    queue: Any  # multiprocessing Queue of (tag, wid, payload)
    progress: Any  # multiprocessing Array('q'): messages received per worker


def make_token(user: str, publish: bool = False, ttl: float = 3600) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user, "iat": now, "exp": now + int(ttl),
                              "rooms": ["bench:*"]}
    if publish:
        claims["publish"] = ["bench:*"]
    return jwt.encode(claims, SECRET, algorithm="HS256")


def subscribe_command(room: str, since: dict[str, Any] | None = None) -> bytes:
    command: dict[str, Any] = {"type": "subscribe", "id": 1, "rooms": [room]}
    if since:
        command["since"] = since
    return json.dumps(command, separators=(",", ":")).encode()


def worker_main(kind: str, wid: int, spec: dict[str, Any], ctl: Control, core: int | None
                ) -> None:
    """A worker process's body: pin, raise the fd limit, run, report (errors too)."""
    try:
        pin(0, core)
        raise_nofile()
        worker = KINDS[kind](wid, spec, ctl)
        ctl.queue.put(("result", wid, worker.run()))
    except BaseException:
        ctl.queue.put(("error", wid, traceback.format_exc()))


def _wait(event: Any, ctl: Control, timeout: float) -> bool:
    """Wait for `event` unless `stop` comes first or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event.wait(0.05):
            return True
        if ctl.stop.is_set():
            return False
    return False


def _percent_ms(values_ns: list[int]) -> list[float]:
    return [v / 1e6 for v in values_ns]


class Fleet(Loop):
    """N connections that each connect, subscribe to one room and then count messages.

    Used for the connect ramp (timed from `connect`), the fan-out receivers, the many-rooms
    subscribers and the soak. At most `cap` handshakes are in flight at once.
    """

    def __init__(self, wid: int, spec: dict[str, Any], ctl: Control) -> None:
        super().__init__(spec["port"], sample=SAMPLE_MODES[spec.get("sample", "none")])
        self.wid = wid
        self.spec = spec
        self.ctl = ctl
        self.cap = int(spec.get("cap", 256))
        rooms: list[str] = spec["rooms"]
        first = int(spec["first"])
        self.fleet = [Conn(first + i, rooms[i % len(rooms)]) for i in range(spec["n"])]
        self.pending = 0
        self.next = 0
        self.settled = 0
        self.subscribed = 0
        self.lost_after_open = 0
        self.done: set[int] = set()

    def run(self) -> dict[str, Any]:
        if self.spec.get("auth", True):
            for conn in self.fleet:
                conn.token = make_token(f"u{conn.index}")
        self.ctl.queue.put(("ready", self.wid, None))
        if not _wait(self.ctl.connect, self.ctl, SETTLE_TIMEOUT):
            return {"aborted": True}
        deadline = time.monotonic() + SETTLE_TIMEOUT
        self._top_up()
        while self.settled < len(self.fleet) and time.monotonic() < deadline:
            self.poll(0.05)
            self._top_up()
        self.ctl.queue.put(("subscribed", self.wid, self._ramp_stats()))
        self._hold()
        return self._result()

    def _top_up(self) -> None:
        while self.pending < self.cap and self.next < len(self.fleet):
            conn = self.fleet[self.next]
            self.next += 1
            self.pending += 1
            self.connect(conn)

    def _settle(self, conn: Conn, ok: bool) -> None:
        if conn.index in self.done:
            return
        self.done.add(conn.index)
        self.pending -= 1
        self.settled += 1
        if ok:
            self.subscribed += 1
            conn.t_subscribed = time.monotonic_ns()

    def on_text(self, conn: Conn, payload: bytes) -> None:
        if payload.startswith(CONNECTED):
            conn.t_open = time.monotonic_ns()
            self.send_text(conn, subscribe_command(conn.room))
        elif payload.startswith(SUBSCRIBED):
            self._settle(conn, b'"ok":true' in payload)

    def on_closed(self, conn: Conn, code: int | None, why: str) -> None:
        if conn.t_subscribed:
            self.lost_after_open += 1
        else:
            self._settle(conn, False)

    def _ramp_stats(self) -> dict[str, Any]:
        done = [c for c in self.fleet if c.t_subscribed]
        return {
            "n": len(self.fleet),
            "subscribed": len(done),
            "failures": dict(self.failures),
            "closes": {str(k): v for k, v in self.closes.items()},
            "first_start": min((c.t_start for c in self.fleet if c.t_start), default=0),
            "last_subscribed": max((c.t_subscribed for c in done), default=0),
            "connect_ms": _percent_ms([c.t_open - c.t_start for c in done]),
            "subscribe_ms": _percent_ms([c.t_subscribed - c.t_start for c in done]),
        }

    def _hold(self) -> None:
        """Receive (answering pings) until `stop`, posting progress for the runner."""
        progress = self.ctl.progress
        stop = self.ctl.stop
        deadline = time.monotonic() + HOLD_TIMEOUT
        while not stop.is_set() and time.monotonic() < deadline:
            self.poll(0.05)
            progress[self.wid] = self.messages

    def _result(self) -> dict[str, Any]:
        open_now = sum(1 for c in self.fleet if c.sock is not None)
        pings = [c.pings for c in self.fleet if c.t_subscribed]
        self.abort_all()
        return {
            "messages": self.messages,
            "per_conn": array("q", (c.messages for c in self.fleet)).tobytes(),
            "rooms": [c.room for c in self.fleet],
            "samples": self.samples.tobytes(),
            "open": open_now,
            "lost_after_open": self.lost_after_open,
            "closes": {str(k): v for k, v in self.closes.items()},
            "pings_min": min(pings, default=0),
            "pings_max": max(pings, default=0),
        }


class Publisher(Loop):
    """One connection that publishes stamped payloads, at a fixed rate or as fast as the
    receivers keep up (a window over their posted progress) and the acks allow."""

    def __init__(self, wid: int, spec: dict[str, Any], ctl: Control) -> None:
        super().__init__(spec["port"])
        self.wid = wid
        self.spec = spec
        self.ctl = ctl
        self.conn = Conn(-1, token=make_token("publisher", publish=True))
        self.rooms: list[bytes] = [json.dumps(r).encode() for r in spec["rooms"]]
        self.size = int(spec.get("size", 100))
        self.opened = False
        self.sent = 0
        self.acked = 0
        self.errors: dict[str, int] = {}
        self.closed_why = ""

    def on_text(self, conn: Conn, payload: bytes) -> None:
        if payload.startswith(PUBLISHED):
            self.acked += 1
        elif payload.startswith(CONNECTED):
            self.opened = True
        elif payload.startswith(ERROR):
            key = payload[:160].decode(errors="replace")
            self.errors[key] = self.errors.get(key, 0) + 1

    def on_closed(self, conn: Conn, code: int | None, why: str) -> None:
        self.closed_why = f"{code} {why}"

    def _frame(self, k: int) -> bytes:
        room = self.rooms[k % len(self.rooms)]
        data = stamp_payload(self.size, time.monotonic_ns())
        return client_frame(b'{"type":"publish","room":%b,"data":%b}' % (room, data),
                            self.conn.mask)

    def run(self) -> dict[str, Any]:
        self.connect(self.conn)
        deadline = time.monotonic() + 20
        while not self.opened and time.monotonic() < deadline and not self.closed_why:
            self.poll(0.05)
        if not self.opened:
            raise RuntimeError(f"the publisher could not connect: {self.closed_why or 'timeout'}"
                               f" {dict(self.failures)}")
        self.ctl.queue.put(("ready", self.wid, None))
        if not _wait(self.ctl.go, self.ctl, HOLD_TIMEOUT):
            return {"aborted": True}
        t0 = time.monotonic()
        if self.spec["mode"] == "fixed":
            self._fixed(t0)
        else:
            self._as_fast(t0)
        t_end = time.monotonic()
        ack_deadline = t_end + float(self.spec.get("ack_timeout", 10))
        while (self.acked < self.sent and time.monotonic() < ack_deadline
               and self.conn.sock is not None):
            self.poll(0.02)
        result = {"sent": self.sent, "acked": self.acked, "errors": self.errors,
                  "seconds": t_end - t0, "closed": self.closed_why}
        self.abort_all()
        return result

    def _fixed(self, t0: float) -> None:
        rate = float(self.spec["rate"])
        total = int(rate * float(self.spec["duration"]))
        stop = self.ctl.stop
        while self.sent < total and self.conn.sock is not None and not stop.is_set():
            now = time.monotonic()
            due = min(total, int((now - t0) * rate) + 1)
            if due > self.sent:
                frames = [self._frame(k) for k in range(self.sent, due)]
                self.sent = due
                self.send(self.conn, b"".join(frames))
            self.poll(max(0.0, t0 + self.sent / rate - time.monotonic()))

    def _as_fast(self, t0: float) -> None:
        end = t0 + float(self.spec["duration"])
        window = int(self.spec.get("window", 500))
        ack_window = int(self.spec.get("ack_window", 64))
        receivers: list[tuple[int, int]] = self.spec["receivers"]  # (wid, connections)
        progress = self.ctl.progress
        stop = self.ctl.stop
        limit = int(self.spec.get("max_count", 10_000_000))
        while time.monotonic() < end and self.conn.sock is not None and self.sent < limit:
            slowest = min(progress[w] // n for w, n in receivers)
            allowed = min(self.acked + ack_window, slowest + window, limit)
            if allowed > self.sent:
                count = min(allowed - self.sent, 64)
                frames = [self._frame(k) for k in range(self.sent, self.sent + count)]
                self.sent += count
                self.send(self.conn, b"".join(frames))
                self.poll(0)
            else:
                self.poll(0.001)
                if stop.is_set():
                    break


class Storm(Loop):
    """Clients with history: subscribe, receive, and when the server goes away reconnect
    with jittered backoff and resubscribe with `since`, recording how it went."""

    def __init__(self, wid: int, spec: dict[str, Any], ctl: Control) -> None:
        super().__init__(spec["port"], track_offsets=True)
        self.wid = wid
        self.spec = spec
        self.ctl = ctl
        rooms: list[str] = spec["rooms"]
        first = int(spec["first"])
        self.fleet = [Conn(first + i, rooms[i % len(rooms)]) for i in range(spec["n"])]
        self.timers: list[tuple[float, int]] = []
        self.phase = 1
        self.subscribed = 0
        self.back = 0
        self.recovered = {"true": 0, "false": 0, "missing": 0}
        self.t_lost: dict[int, int] = {}
        self.t_back: dict[int, int] = {}
        self.received_before: dict[int, int] = {}
        self.close_codes: dict[str, int] = {}
        self.attempts_total = 0
        self.retries: dict[int, int] = {}

    def run(self) -> dict[str, Any]:
        for conn in self.fleet:
            conn.token = make_token(f"h{conn.index}")
        self.ctl.queue.put(("ready", self.wid, None))
        if not _wait(self.ctl.connect, self.ctl, SETTLE_TIMEOUT):
            return {"aborted": True}
        for conn in self.fleet:
            self.connect(conn)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while self.subscribed < len(self.fleet) and time.monotonic() < deadline:
            self.poll(0.05)
        self.ctl.queue.put(("subscribed", self.wid, {"subscribed": self.subscribed,
                                                     "failures": dict(self.failures)}))
        progress = self.ctl.progress
        deadline = time.monotonic() + HOLD_TIMEOUT
        while not self.ctl.stop.is_set() and time.monotonic() < deadline:
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, i = heapq.heappop(self.timers)
                self.connect(self.fleet[i - self.fleet[0].index])
            wait = 0.05 if not self.timers else min(0.05, max(0.0, self.timers[0][0] - now))
            self.poll(wait)
            progress[self.wid] = self.messages
            progress[self.wid + 64] = self.back
        result = {
            "subscribed": self.subscribed,
            "back": self.back,
            "recovered": self.recovered,
            "close_codes": self.close_codes,
            "failures": dict(self.failures),
            "attempts": self.attempts_total,
            "t_lost": list(self.t_lost.values()),
            "t_back": list(self.t_back.values()),
            "received_before": list(self.received_before.values()),
            "messages": self.messages,
        }
        self.abort_all()
        return result

    def on_text(self, conn: Conn, payload: bytes) -> None:
        if payload.startswith(CONNECTED):
            since = None
            if conn.epoch:
                since = {conn.room: {"offset": conn.offset, "epoch": conn.epoch}}
            self.send_text(conn, subscribe_command(conn.room, since))
        elif payload.startswith(SUBSCRIBED):
            entry = json.loads(payload)["rooms"].get(conn.room, {})
            if not entry.get("ok"):
                return
            if conn.epoch:  # a resubscription after the restart
                flag = entry.get("recovered")
                self.recovered["missing" if flag is None else str(bool(flag)).lower()] += 1
                self.back += 1
                self.t_back[conn.index] = time.monotonic_ns()
            else:
                self.subscribed += 1
            if entry.get("recovered") is not True:
                conn.offset = int(entry.get("offset", 0))  # else the missed ones follow
            conn.epoch = str(entry.get("epoch", ""))

    def on_message_offset(self, conn: Conn, offset: int) -> None:
        conn.offset = offset

    def on_closed(self, conn: Conn, code: int | None, why: str) -> None:
        if code is not None:
            self.close_codes[str(code)] = self.close_codes.get(str(code), 0) + 1
        if self.ctl.stop.is_set():
            return
        if conn.index not in self.t_lost and conn.epoch:
            self.phase = 2
            self.t_lost[conn.index] = time.monotonic_ns()
            self.received_before[conn.index] = conn.messages
        self.attempts_total += 1
        retries = self.retries[conn.index] = self.retries.get(conn.index, -1) + 1
        if retries == 0:
            delay = random.uniform(0.0, 0.1)  # the first try: soon, spread out
        else:
            delay = min(0.05 * 2**retries, 0.5) * random.uniform(0.5, 1.0)
        heapq.heappush(self.timers, (time.monotonic() + delay, conn.index))


class Stalled(Loop):
    """One subscriber that stops reading once subscribed, resumes after `stall` seconds and
    reports how the server closed it (roomcast's contract: 4409)."""

    def __init__(self, wid: int, spec: dict[str, Any], ctl: Control) -> None:
        super().__init__(spec["port"], rcvbuf=int(spec.get("rcvbuf", 4096)))
        self.wid = wid
        self.spec = spec
        self.ctl = ctl
        self.conn = Conn(-2, spec["room"], make_token("stalled"))
        self.state_note = ""
        self.code: int | None = None

    def on_text(self, conn: Conn, payload: bytes) -> None:
        if payload.startswith(CONNECTED):
            self.send_text(conn, subscribe_command(conn.room))
        elif payload.startswith(SUBSCRIBED):
            conn.t_subscribed = time.monotonic_ns()

    def on_closed(self, conn: Conn, code: int | None, why: str) -> None:
        self.code = code
        self.state_note = why

    def run(self) -> dict[str, Any]:
        self.ctl.queue.put(("ready", self.wid, None))
        if not _wait(self.ctl.connect, self.ctl, SETTLE_TIMEOUT):
            return {"aborted": True}
        self.connect(self.conn)
        deadline = time.monotonic() + 20
        while not self.conn.t_subscribed and time.monotonic() < deadline and self.conn.sock:
            self.poll(0.05)
        self.ctl.queue.put(("subscribed", self.wid, {"subscribed": bool(self.conn.t_subscribed)}))
        if not _wait(self.ctl.go, self.ctl, HOLD_TIMEOUT):
            return {"aborted": True}
        t_stall = time.monotonic()
        resume = t_stall + float(self.spec["stall"])
        while time.monotonic() < resume:
            time.sleep(0.05)  # not reading: the point of this client
        t_resume = time.monotonic()
        deadline = t_resume + float(self.spec.get("drain", 15))
        while self.conn.sock is not None and time.monotonic() < deadline:
            self.poll(0.05)
        return {"code": self.code, "how": self.state_note, "messages": self.conn.messages,
                "stalled_s": t_resume - t_stall,
                "closed_after_resume_s": time.monotonic() - t_resume,
                "still_open": self.conn.sock is not None}


KINDS: dict[str, Any] = {"fleet": Fleet, "publisher": Publisher, "storm": Storm,
                         "stalled": Stalled}

