"""`python -m benchmarks.abuse`: what a few valid tokens can cost a node, measured.

Four cases, each against its own `roomcast serve` process on 127.0.0.1 (free ports, a test
secret, stopped by PID): (a) connections that each hold an unfinished fragmented message,
RSS at the peak and after they closed; (b) server CPU under a ping flood; (c) a bystander's
delivery latency while a connect flood runs; (d) the log lines written for refused
handshakes. Plus (e), in a plain Python process: what glibc keeps after FrameReaders that
held big messages are freed, and what malloc_trim(0) gives back. Everything is bounded in
count and time; the table at the end is the result.

To compare with an older roomcast, export its src/ (`git archive <rev> src | tar -x -C DIR`)
and pass --roomcast-src DIR/src. --flood-in-flight and --flood-rate shape the connect flood
(how many handshakes a server that caps them would have in progress, how many arrive a
second); --set passes settings the servers do not know by default.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.servers import REPO, Server, cores, free_port, pin, raise_nofile
from benchmarks.workers import make_token, subscribe_command
from benchmarks.wsclient import CONNECTED, OPEN, Conn, Loop, client_frame, stamp_payload

ROOM = "bench:abuse"
MIB = 1024 * 1024
# The protocol's defaults (§6), so that limits meant for abuse are the ones measured.
DEFAULT_LIMITS: dict[str, Any] = {"rate_per_second": 20, "rate_burst": 40}


def fragment(payload: bytes, mask: bytes, first: bool) -> bytes:
    """A non-final masked frame: text when it starts the message, else a continuation."""
    frame = client_frame(payload, mask, opcode=1 if first else 0)
    return bytes((frame[0] & 0x7F,)) + frame[1:]


class Clients(Loop):
    """An epoll loop that counts who got `connected` and what close codes came back."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.opened = 0
        self.ended = 0

    def on_text(self, conn: Conn, payload: bytes) -> None:
        if payload.startswith(CONNECTED):
            self.opened += 1

    def on_closed(self, conn: Conn, code: int | None, why: str) -> None:
        self.ended += 1

    def open_all(self, conns: list[Conn], timeout: float, batch: int = 200) -> None:
        """Connect every conn (at most `batch` handshakes in flight) and wait for them."""
        deadline = time.monotonic() + timeout
        started = 0
        while self.opened + self.ended < len(conns) and time.monotonic() < deadline:
            while started < len(conns) and started - self.opened - self.ended < batch:
                self.connect(conns[started])
                started += 1
            self.poll(0.01)

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll(min(0.05, max(0.0, end - time.monotonic())))


def start_server(args: argparse.Namespace, tag: str, settings: dict[str, Any]) -> Server:
    """A roomcast server for one case, its log in the run's directory."""
    core, _ = cores()
    extra = dict(DEFAULT_LIMITS, **settings, **args.set)
    server = Server("roomcast", free_port(), core, Path(args.logs) / f"{tag}.log", extra,
                    src=args.roomcast_src)
    server.start()
    return server


def lines_in(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


# --- (a) unfinished messages -----------------------------------------------------------


def held_messages(args: argparse.Namespace) -> dict[str, Any]:
    """N connections each send an unfinished text message of ~1 MiB in fragments, a round
    at a time; RSS is sampled throughout, then again after every connection is gone."""
    server = start_server(args, "a-held", {})
    try:
        loop = Clients(server.port)
        token = make_token("trickler")
        conns = [Conn(i, token=token) for i in range(args.held_conns)]
        rss_before = server.rss()
        loop.open_all(conns, timeout=60)
        live = [c for c in conns if c.state == OPEN]
        chunk = args.fragment
        rounds = (MIB - chunk) // chunk  # stays under max_message_bytes (1 MiB)
        peak = server.rss()
        t0 = time.monotonic()
        first = {c.fd: fragment(b"x" * chunk, c.mask, first=True) for c in live}
        rest = {c.fd: fragment(b"x" * chunk, c.mask, first=False) for c in live}
        for r in range(rounds):
            if time.monotonic() - t0 > args.held_seconds * 8 or not loop.conns:
                break  # bounded: a slow trickle (tiny fragments) stops here
            for c in live:
                if c.state == OPEN:
                    loop.send(c, (rest if r else first)[c.fd])
            while any(c.out for c in live) and time.monotonic() - t0 < args.held_seconds * 4:
                loop.poll(0.01)
            loop.poll(args.trickle_gap)
            peak = max(peak, server.rss())
        trickled = time.monotonic() - t0
        hold_end = time.monotonic() + args.held_seconds
        while time.monotonic() < hold_end:
            loop.poll(0.2)
            peak = max(peak, server.rss())
        still_open = sum(1 for c in live if c.state == OPEN)
        loop.abort_all()
        time.sleep(args.settle)
        after = server.rss()
        return {"conns": len(live), "held_each_kib": rounds * chunk // 1024,
                "trickle_s": round(trickled, 1), "still_open_after_hold": still_open,
                "closes": dict(loop.closes), "rss_before_mb": rss_before / MIB,
                "rss_peak_mb": peak / MIB, "rss_after_mb": after / MIB}
    finally:
        server.stop()


# --- (b) ping flood --------------------------------------------------------------------


def ping_flood(args: argparse.Namespace) -> dict[str, Any]:
    """8 connections send pings as fast as their sockets take them; server CPU % over the
    window (the server is pinned to one core, so 100 % is all of it)."""
    server = start_server(args, "b-ping", {})
    try:
        loop = Clients(server.port)
        token = make_token("pinger")
        conns = [Conn(i, token=token) for i in range(args.ping_conns)]
        loop.open_all(conns, timeout=20)
        batches = {c.fd: b"".join(client_frame(b"12345678", c.mask, opcode=9)
                                  for _ in range(1000)) for c in conns if c.state == OPEN}
        sent = 0
        cpu0, t0 = server.cpu(), time.monotonic()
        while time.monotonic() - t0 < args.ping_seconds:
            for c in list(loop.conns.values()):
                if c.state == OPEN and not c.out:
                    loop.send(c, batches[c.fd])
                    sent += 1000
            loop.poll(0.001)
        wall = time.monotonic() - t0
        cpu = server.cpu() - cpu0
        still_open = sum(1 for c in conns if c.state == OPEN)
        loop.abort_all()
        return {"conns": len(batches), "pings_written": sent, "seconds": round(wall, 1),
                "server_cpu_pct": 100 * cpu / wall, "still_open": still_open,
                "closes": dict(loop.closes)}
    finally:
        server.stop()


# --- (c) connect flood and a bystander --------------------------------------------------


def _flood(port: int, total: int, rate: float, in_flight: int, seconds: float,
           core: int | None, out: Any) -> None:
    """In a child process: `total` connections with a valid token, each dropped (reset) as
    soon as it is `connected`; at most `in_flight` at a time, and at most `rate` a second
    (0: as fast as they go)."""
    pin(os.getpid(), core)
    loop = Clients(port)
    token = make_token("flooder")
    dropped = started = 0
    t0 = time.monotonic()
    pending: list[Conn] = []
    while dropped + loop.ended < total and time.monotonic() - t0 < seconds:
        allowed = total if not rate else min(total, int((time.monotonic() - t0) * rate) + 1)
        while started < allowed and len(loop.conns) < in_flight:
            conn = Conn(started, token=token)
            loop.connect(conn)
            pending.append(conn)
            started += 1
        loop.poll(0.005)
        for conn in pending:
            if conn.state == OPEN:
                loop.abort(conn)
                dropped += 1
        pending = [c for c in pending if c.sock is not None]
    out.put({"upgraded": dropped, "failed": dict(loop.failures), "closes": dict(loop.closes),
             "seconds": round(time.monotonic() - t0, 1)})


def _percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def _publish_for(loop: Clients, pub: Conn, rate: float, seconds: float,
                 stop: Callable[[], bool] | None = None) -> int:
    """Publish stamped messages at `rate` for `seconds` (or until stop()); how many."""
    sent = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds and not (stop and stop()):
        due = int((time.monotonic() - t0) * rate) + 1
        while sent < due:
            data = stamp_payload(100, time.monotonic_ns())
            loop.send(pub, client_frame(
                b'{"type":"publish","room":"%s","data":%s}' % (ROOM.encode(), data), pub.mask))
            sent += 1
        loop.poll(max(0.0, min(0.005, t0 + sent / rate - time.monotonic())))
    return sent


def connect_flood(args: argparse.Namespace) -> dict[str, Any]:
    """Bystander latency quiet, then during a flood of connections from another process."""
    server = start_server(args, "c-flood", {"rate_per_second": 200, "rate_burst": 400})
    try:
        loop = Clients(server.port)
        loop.sample = 1  # SAMPLE_ALL: every `message` frame's stamp becomes a latency
        sub = Conn(0, ROOM, make_token("bystander"))
        pub = Conn(1, ROOM, make_token("publisher", publish=True))
        loop.open_all([sub, pub], timeout=20)
        loop.send_text(sub, subscribe_command(ROOM))
        loop.pump(0.5)
        _publish_for(loop, pub, args.rate, args.quiet_seconds)
        loop.pump(0.3)
        quiet, loop.samples = list(loop.samples), type(loop.samples)("q")
        _, gen = cores()
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        child = ctx.Process(target=_flood, args=(server.port, args.flood, args.flood_rate,
                                                 args.flood_in_flight, args.flood_seconds,
                                                 gen[0], out))
        child.start()
        sent = _publish_for(loop, pub, args.rate, args.flood_seconds,
                            stop=lambda: not child.is_alive())
        flood = out.get(timeout=30)
        child.join(10)
        loop.pump(0.5)
        during = list(loop.samples)
        loop.abort_all()
        return {"quiet_p50_ms": _percentile(quiet, 0.5), "quiet_p99_ms": _percentile(quiet, 0.99),
                "flood_p50_ms": _percentile(during, 0.5), "flood_p99_ms": _percentile(during, 0.99),
                "flood_max_ms": _percentile(during, 1.0), "delivered": len(during),
                "published": sent, "flood": flood}
    finally:
        server.stop()


# --- (d) refused handshakes --------------------------------------------------------------


def refused(args: argparse.Namespace) -> dict[str, Any]:
    """`total` handshakes with a token that fails to verify; the log lines they cost."""
    server = start_server(args, "d-refused", {})
    try:
        time.sleep(0.2)
        before = lines_in(server.log)
        loop = Clients(server.port)
        conns = [Conn(i, token="not-a-valid-token") for i in range(args.refused)]
        t0 = time.monotonic()
        loop.open_all(conns, timeout=60)
        seconds = time.monotonic() - t0
        loop.abort_all()
        time.sleep(0.5)
        return {"handshakes": len(conns), "seconds": round(seconds, 1),
                "closes": dict(loop.closes), "log_lines": lines_in(server.log) - before}
    finally:
        server.stop()


# --- (e) the allocator, in process ---------------------------------------------------------

_HEAP_PROBE = r"""
import ctypes, gc, json, os, sys, time
from roomcast.websocket import FrameReader
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page / 2**20
n, chunk = int(sys.argv[1]), int(sys.argv[2])
mask = b"\x01\x02\x03\x04"
def frame(first, size):
    head = bytes((0x01 if first else 0x00,))
    if size < 126:
        head += bytes((0x80 | size,))
    else:
        head += bytes((0xFE,)) + size.to_bytes(2, "big")
    return head + mask + bytes(size)
libc = ctypes.CDLL("libc.so.6")
if int(sys.argv[3]):
    libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: fixed, so big buffers are always mmapped
out = {"before_mb": rss()}
rounds = ((1 << 20) - chunk) // chunk
frames = [frame(True, chunk), frame(False, chunk)]
for burst in (1, 2):  # the second: glibc's mmap threshold has moved after the first free
    readers = [FrameReader(1 << 20) for _ in range(n)]
    for r in range(rounds):
        for one in readers:
            one.feed(frames[r > 0])
    out[f"held{burst}_mb"] = rss()
    readers.clear()
    gc.collect()
    out[f"freed{burst}_mb"] = rss()
t0 = time.perf_counter()
libc.malloc_trim(0)
out["trim_ms"] = (time.perf_counter() - t0) * 1e3
out["trimmed_mb"] = rss()
print(json.dumps(out))
"""


def heap(args: argparse.Namespace) -> dict[str, Any]:
    """FrameReaders holding ~1 MiB each in a fresh interpreter, in two bursts: RSS while
    held, after each burst is freed, and after malloc_trim(0) (what glibc keeps unless
    asked)."""
    env = dict(os.environ)
    src = str(args.roomcast_src or REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    argv = [str(args.held_conns), str(args.fragment), str(int(args.mallopt))]
    done = subprocess.run([sys.executable, "-c", _HEAP_PROBE, *argv], capture_output=True,
                          env=env, timeout=120, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --- the table ---------------------------------------------------------------------------

CASES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "held": held_messages, "ping": ping_flood, "flood": connect_flood, "refused": refused,
    "heap": heap}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


def table(results: dict[str, dict[str, Any]]) -> str:
    """One line per case: its measured values as key=value."""
    rows = []
    for name, result in results.items():
        cells = " ".join(f"{k}={_fmt(v)}" for k, v in result.items())
        rows.append(f"{name:<8} {cells}")
    return "\n".join(rows)


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.abuse", description=__doc__)
    parser.add_argument("--case", action="append", choices=list(CASES),
                        help="run only this case (repeatable); default: all")
    parser.add_argument("--held-conns", type=int, default=500)
    parser.add_argument("--fragment", type=int, default=8192, help="bytes per fragment")
    parser.add_argument("--trickle-gap", type=float, default=0.02,
                        help="seconds between rounds of fragments")
    parser.add_argument("--held-seconds", type=float, default=8.0,
                        help="how long the messages are held unfinished")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds after the connections close before RSS is read")
    parser.add_argument("--ping-conns", type=int, default=8)
    parser.add_argument("--ping-seconds", type=float, default=5.0)
    parser.add_argument("--flood", type=int, default=5000, help="connections in the flood")
    parser.add_argument("--flood-seconds", type=float, default=30.0, help="at most")
    parser.add_argument("--flood-rate", type=float, default=0.0,
                        help="connections a second in the flood (0: as fast as they go)")
    parser.add_argument("--flood-in-flight", type=int, default=500,
                        help="handshakes the flood keeps in progress at once")
    parser.add_argument("--quiet-seconds", type=float, default=4.0)
    parser.add_argument("--rate", type=float, default=50.0, help="bystander publishes/s")
    parser.add_argument("--refused", type=int, default=5000, help="refused handshakes")
    parser.add_argument("--set", type=_setting, action="append", default=[], metavar="N=V",
                        help="an extra server setting (e.g. message_timeout=5), repeatable")
    parser.add_argument("--roomcast-src", type=Path, default=None, metavar="DIR",
                        help="import roomcast from DIR (e.g. an exported older src/)")
    parser.add_argument("--mallopt", action="store_true",
                        help="fix glibc's mmap threshold at 128 KiB (the heap case with "
                        "mallopt, the servers with GLIBC_TUNABLES), as fix_mmap_threshold does")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.set = dict(args.set)
    for name in ("held_conns", "ping_conns", "flood", "refused", "flood_in_flight"):
        if not 1 <= getattr(args, name) <= 20_000:
            raise SystemExit(f"--{name.replace('_', '-')} must be between 1 and 20000")
    if not 16 <= args.fragment <= MIB // 2:
        raise SystemExit(f"--fragment must be between 16 and {MIB // 2} bytes")
    raise_nofile()
    if args.mallopt:  # the servers inherit it: what roomcast.limits.fix_mmap_threshold() does
        os.environ["GLIBC_TUNABLES"] = "glibc.malloc.mmap_threshold=131072"
    _, gen = cores()
    pin(os.getpid(), gen[0])
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="roomcast-abuse-") as logs:
        args.logs = logs
        for name in args.case or list(CASES):
            t0 = time.monotonic()
            try:
                results[name] = CASES[name](args)
            except Exception as exc:  # one broken case must not hide the others' numbers
                results[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            print(f"{name}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    print(table(results))
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
