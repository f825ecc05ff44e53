"""The `api` and `batch` scenarios: publishing through the HTTP server API.

A raw-socket HTTP client keeps 16 keep-alive connections busy with `POST /api/publish`
(or `POST /api/batch`, 100 publishes a request) into 1000 rooms of one WebSocket
subscriber each, against roomcast and a FastAPI + uvicorn peer exposing the same
endpoints (benchmarks/peers/fastapi_peer.py). Measured: publishes/s, the HTTP answer's
latency (from when the request was due, so a server that falls behind pays for it),
the delivery latency at the subscribers, and server CPU per publish.
"""

from __future__ import annotations

import json
import select
import socket
import time
from array import array
from collections import deque
from typing import Any

from benchmarks import workers as worker_kinds
from benchmarks.scenarios import (
    DRAIN,
    FULL,
    QUICK,
    Bench,
    Workers,
    _losses,
    _merge,
    _samples,
    percentiles_ms,
    server_errors,
    session,
    start_fleet,
)
from benchmarks.servers import free_port, profiler
from benchmarks.workers import HOLD_TIMEOUT, SETTLE_TIMEOUT, Control, _wait
from benchmarks.wsclient import stamp_payload

API_KEY = "bench-api-key-0123456789"  # also the FastAPI peer's
CONNECTIONS = 16
ANSWER_TIMEOUT = 10.0  # seconds to wait for the last answers once sending stops
_RECV = 64 * 1024


class _HttpConn:
    __slots__ = ("buf", "out", "sock", "waiting")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.out = b""
        self.waiting: deque[tuple[int, int]] = deque()  # (due ns, publishes) per request


class HttpPublisher:
    """Keep-alive HTTP connections publishing stamped payloads round-robin into rooms: as
    fast as the answers come back (one request in flight per connection), or at a fixed
    rate of requests spread over the connections."""

    def __init__(self, wid: int, spec: dict[str, Any], ctl: Control) -> None:
        self.wid = wid
        self.spec = spec
        self.ctl = ctl
        self.rooms = [json.dumps(r).encode() for r in spec["rooms"]]
        self.per_request = int(spec.get("per_request", 0))  # 0: /api/publish
        self.size = int(spec.get("size", 100))
        self.head = (b"POST %b HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %b\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %%d\r\n\r\n" % (
                         b"/api/batch" if self.per_request else b"/api/publish",
                         spec["key"].encode()))
        self.ep = select.epoll()
        self.conns: dict[int, _HttpConn] = {}
        self.sent = 0  # publishes
        self.requests = 0
        self.acked = 0  # publishes answered 2xx
        self.errors: dict[str, int] = {}
        self.latencies = array("q")

    def _publish(self, k: int, now: int) -> bytes:
        room = self.rooms[k % len(self.rooms)]
        return b'{"room":%b,"data":%b}' % (room, stamp_payload(self.size, now))

    def _request(self, due: int) -> tuple[bytes, int]:
        now = time.monotonic_ns()
        if self.per_request:
            n = self.per_request
            body = b'{"commands":[%b]}' % b",".join(
                b'{"method":"publish","params":%b}' % self._publish(self.sent + i, now)
                for i in range(n))
        else:
            n, body = 1, self._publish(self.sent, now)
        self.sent += n
        self.requests += 1
        return self.head % len(body) + body, n

    def _send(self, conn: _HttpConn, due: int) -> None:
        data, n = self._request(due)
        conn.waiting.append((due, n))
        conn.out += data
        self._flush(conn)

    def _flush(self, conn: _HttpConn) -> None:
        if conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except BlockingIOError:
                sent = 0
            conn.out = conn.out[sent:]
        mask = select.EPOLLIN | (select.EPOLLOUT if conn.out else 0)
        self.ep.modify(conn.sock.fileno(), mask)

    def _readable(self, conn: _HttpConn) -> None:
        try:
            data = conn.sock.recv(_RECV)
        except BlockingIOError:
            return
        if not data:
            raise RuntimeError(f"the server closed a keep-alive connection; answers owed: "
                               f"{len(conn.waiting)}")
        buf = conn.buf + data
        now = time.monotonic_ns()
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0
                              else len(head)]) if at >= 0 else 0
            if len(buf) < end + 4 + length:
                break
            status = int(buf[9:12])
            buf = buf[end + 4 + length:]
            due, n = conn.waiting.popleft()
            self.latencies.append(now - due)
            if 200 <= status < 300:
                self.acked += n
            else:
                key = f"HTTP {status}"
                self.errors[key] = self.errors.get(key, 0) + n
        conn.buf = buf

    def poll(self, timeout: float) -> None:
        for fd, ev in self.ep.poll(timeout):
            conn = self.conns[fd]
            if ev & select.EPOLLOUT:
                self._flush(conn)
            if ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                self._readable(conn)

    def run(self) -> dict[str, Any]:
        for _ in range(int(self.spec.get("connections", CONNECTIONS))):
            sock = socket.create_connection(("127.0.0.1", self.spec["port"]), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            self.conns[sock.fileno()] = _HttpConn(sock)
            self.ep.register(sock.fileno(), select.EPOLLIN)
        self.ctl.queue.put(("ready", self.wid, None))
        if not _wait(self.ctl.go, self.ctl, HOLD_TIMEOUT):
            return {"aborted": True}
        t0 = time.monotonic()
        if self.spec.get("rate"):
            self._fixed(t0)
        else:
            self._as_fast(t0)
        t_end = time.monotonic()
        deadline = t_end + ANSWER_TIMEOUT
        while any(c.waiting for c in self.conns.values()) and time.monotonic() < deadline:
            self.poll(0.02)
        for conn in self.conns.values():
            conn.sock.close()
        return {"sent": self.sent, "acked": self.acked, "errors": self.errors,
                "requests": self.requests, "seconds": t_end - t0,
                "answer_samples": self.latencies.tobytes()}

    def _as_fast(self, t0: float) -> None:
        end = t0 + float(self.spec["duration"])
        stop = self.ctl.stop
        conns = list(self.conns.values())
        while time.monotonic() < end and not stop.is_set():
            for conn in conns:
                if not conn.waiting:
                    self._send(conn, time.monotonic_ns())
            self.poll(0.01)

    def _fixed(self, t0: float) -> None:
        rate = float(self.spec["rate"]) / max(1, self.per_request)  # requests per second
        total = int(rate * float(self.spec["duration"]))
        t0_ns = int(t0 * 1e9)
        stop = self.ctl.stop
        conns = list(self.conns.values())
        k = 0
        while k < total and not stop.is_set():
            due = min(total, int((time.monotonic() - t0) * rate) + 1)
            while k < due:
                conn = min(conns, key=lambda c: len(c.waiting))
                self._send(conn, t0_ns + int(k / rate * 1e9))
                k += 1
            self.poll(max(0.0, t0 + k / rate - time.monotonic()))


worker_kinds.KINDS["http_publisher"] = HttpPublisher  # forked workers find it by name


def _measure(workers: Workers, server: Any, fleet: list[tuple[int, int]], pub: int,
             timeout: float) -> dict[str, Any]:
    """Publish; wait for the answers and the deliveries; CPU over exactly that window."""
    wids = [w for w, _ in fleet]
    spy = profiler(server, timeout) if workers.bench.profile else None
    s0, g0 = server.cpu(), workers.cpu()
    t0 = time.monotonic()
    workers.ctl.go.set()
    published = workers.wait("result", [pub], timeout)[pub]
    accepted = published["acked"]
    deadline = time.monotonic() + DRAIN
    while workers.progress(wids) < accepted and time.monotonic() < deadline:
        time.sleep(0.005)
    t1 = time.monotonic()
    s1, g1 = server.cpu(), workers.cpu()
    if spy is not None:
        spy.stop()
    results = workers.finish(wids)
    received = sum(r["messages"] for r in results.values())
    wall = t1 - t0
    answers = array("q")
    answers.frombytes(published["answer_samples"])
    answer = percentiles_ms(list(answers))
    out: dict[str, Any] = {
        "published": published["sent"], "acked": accepted, "accepted": accepted,
        "requests": published["requests"],
        "publish_errors": sum(published["errors"].values()), "errors": published["errors"],
        "publish_seconds": published["seconds"],
        "publishes_per_s": accepted / published["seconds"] if published["seconds"] else None,
        "answer_p50_ms": answer["p50_ms"], "answer_p99_ms": answer["p99_ms"],
        "answer_max_ms": answer["max_ms"],
        "delivered": received, "expected": accepted, "window_s": wall,
        "server_cpu_pct": (s1 - s0) / wall * 100,
        "server_us_per_publish": (s1 - s0) * 1e6 / accepted if accepted else None,
        "gen_cpu_pct": (g1 - g0) / wall * 100, "gen_cores": len(workers.bench.gen_cores),
        "closed_early": sum(r["lost_after_open"] for r in results.values()),
        "closes": _merge([r["closes"] for r in results.values()]),
        "server_errors": server_errors(server),
    }
    out["gen_bound"] = out["gen_cpu_pct"] >= 90 * len(workers.bench.gen_cores)
    delivery = percentiles_ms(_samples(results))
    out.update({"delivery_p50_ms": delivery["p50_ms"], "delivery_p99_ms": delivery["p99_ms"]})
    out["_results"] = results
    return out


def api_publish(bench: Bench, target: str, rooms: int, duration: float,
                rate: int | None = None, per_request: int = 0) -> dict[str, Any]:
    """`rooms` rooms of one subscriber; 16 keep-alive connections publishing into them
    round-robin through /api/publish (or /api/batch, `per_request` a request)."""
    names = [f"bench:r{i}" for i in range(rooms)]
    settings = {"http_port": free_port(), "api_key": API_KEY, "max_pending": 10_000}
    label = f"{'batch' if per_request else 'api'}-{rooms}-{rate or 'max'}"
    with session(bench, target, label, settings) as (server, workers):
        http_port = server.settings["http_port"] if target == "roomcast" else server.port
        fleet = start_fleet(workers, server, rooms, names, sample="all")
        pub = workers.start("http_publisher", {
            "port": http_port, "key": API_KEY, "rooms": names, "duration": duration,
            "rate": rate, "per_request": per_request})
        workers.wait("ready", [w for w, _ in fleet] + [pub], 120)
        workers.ctl.connect.set()
        workers.wait("subscribed", [w for w, _ in fleet], SETTLE_TIMEOUT + 30)
        out = _measure(workers, server, fleet, pub, duration + 60)
        n = out["accepted"]
        _losses(out, [n // rooms + (1 if i < n % rooms else 0) for i in range(rooms)])
        out.update({"rooms": rooms, "rate": rate or "max", "per_request": per_request or 1})
        return out


SCENARIOS = ("api", "batch")


def cases(name: str, bench: Bench, peers: bool, duration: float
          ) -> list[tuple[str, str, list[tuple[str, Any]]]]:
    """The harness's cases for `api` or `batch`: roomcast, the FastAPI peer, the HTTP
    floor (the least a Python server does per publish) and the same floor on Trio (the
    least a Trio server does), alternated."""
    rooms = bench.sizes.api_rooms
    who = ["roomcast", "fastapi", "http_floor", "trio_floor"] if peers else ["roomcast"]
    if name == "batch":
        return [("batch", f"{rooms}x100/req", [
            (t, lambda t=t: api_publish(bench, t, rooms, duration, per_request=100))
            for t in who])]
    return [("api", f"{rooms}x{rate}/s" if rate else f"{rooms}xmax", [
        (t, lambda t=t, rate=rate: api_publish(bench, t, rooms, duration, rate)) for t in who])
        for rate in (None, 5000)]


COLUMNS = [("rooms", "rooms", "d"), ("rate", "pub/s asked", "s"),
           ("per_request", "per req", "d"), ("publishes_per_s", "publishes/s", ",.0f"),
           ("answer_p50_ms", "answer p50 ms", ".2f"), ("answer_p99_ms", "answer p99 ms", ".2f"),
           ("delivery_p50_ms", "deliv p50 ms", ".2f"), ("delivery_p99_ms", "deliv p99 ms", ".2f"),
           ("lost", "lost", "d"), ("publish_errors", "errors", "d"),
           ("server_us_per_publish", "srv µs/pub", ".1f"), ("server_cpu_pct", "srv CPU %", ".0f"),
           ("gen_cpu_pct", "gen CPU %", ".0f"), ("gen_bound", "gen-bound", "b")]
HEADLINE = ["publishes_per_s", "answer_p99_ms", "delivery_p99_ms", "lost",
            "server_us_per_publish", "gen_cpu_pct"]
RATIO_METRICS = ["publishes_per_s", "server_us_per_publish", "answer_p99_ms"]


def targets(summary: dict[str, Any], quick: bool) -> list[tuple[str, bool | None, str]]:
    """The API targets: (name, passed or None when not run, what was measured)."""
    rooms = (QUICK if quick else FULL).api_rooms
    def get(scenario: str, case: str, target: str = "roomcast") -> dict[str, Any] | None:
        m = summary.get(f"{scenario}|{case}", {}).get(target)
        return None if m is None or not m.get("runs_ok") else dict(m)

    out: list[tuple[str, bool | None, str]] = []
    mine, peer = get("api", f"{rooms}xmax"), get("api", f"{rooms}xmax", "fastapi")
    rate = None if mine is None else mine.get("publishes_per_s")
    out.append(("POST /api/publish >= 20,000 publishes/s on one server core",
                None if rate is None else rate >= 20_000,
                "-" if rate is None else f"{rate:,.0f}/s"
                + (" (generator-bound: a lower bound)" if mine and mine.get("gen_bound") else "")))
    theirs = None if peer is None else peer.get("publishes_per_s")
    out.append(("POST /api/publish >= 3x the FastAPI peer, same run",
                None if not (rate and theirs) else rate >= 3 * theirs,
                "-" if not (rate and theirs) else f"{rate:,.0f} vs {theirs:,.0f} "
                f"(x{rate / theirs:.2f})"))
    at5k = get("api", f"{rooms}x5000/s")
    p99 = None if at5k is None else at5k.get("answer_p99_ms")
    out.append(("p99 of the /api/publish answer <= 5 ms at 5,000/s",
                None if p99 is None else p99 <= 5, "-" if p99 is None else f"{p99:.2f} ms"))
    b = get("batch", f"{rooms}x100/req")
    brate = None if b is None else b.get("publishes_per_s")
    out.append(("/api/batch >= 200,000 publishes/s into 1000 rooms (deliveries included)",
                None if brate is None else brate >= 200_000,
                "-" if brate is None else f"{brate:,.0f}/s, lost {b.get('lost') if b else '-'}"))
    return out
