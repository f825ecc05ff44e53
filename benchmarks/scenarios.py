"""The scenarios: each starts a fresh server, drives it from worker processes and returns
one flat dict of numbers for one run of one case against one target."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import queue
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.servers import Server, free_port, profiler
from benchmarks.workers import SETTLE_TIMEOUT, Control, worker_main

PER_PROCESS = 8000  # connections per generator process (the open-files hard limit is ~20k)
IN_FLIGHT = 100  # handshakes in flight at once during a ramp, over all generator processes
DRAIN = 5.0  # seconds to wait for the last deliveries once publishing stops


class BenchError(RuntimeError):
    """A scenario could not run to the end; the message says what broke."""


@dataclass
class Sizes:
    """How big and how long each scenario is; `--quick` picks the small set."""

    connect: list[int]
    peer_connect_max: int
    fanout_subs: int
    fanout_rates: list[int]
    duration: float
    maxrate_subs: list[int]
    maxrate_duration: float
    rooms: int
    rooms_rate: int
    storm_clients: int
    storm_rooms: int
    storm_messages: int
    slow_subs: int
    slow_rate: int
    slow_duration: float
    slow_size: int
    slow_max_pending: int
    soak_conns: int
    soak_seconds: float
    soak_heartbeat: float
    api_rooms: int = 1000  # the `api` and `batch` scenarios (benchmarks/api_bench.py)


FULL = Sizes(connect=[1000, 5000, 10000, 19000], peer_connect_max=5000, fanout_subs=1000,
             fanout_rates=[10, 50], duration=6.0, maxrate_subs=[100, 1000],
             maxrate_duration=4.0, rooms=10000, rooms_rate=5000, storm_clients=1000,
             storm_rooms=100, storm_messages=10, slow_subs=200, slow_rate=50,
             slow_duration=6.0, slow_size=1024, slow_max_pending=50, soak_conns=19000,
             soak_seconds=300.0, soak_heartbeat=25.0)
QUICK = Sizes(connect=[200, 1000], peer_connect_max=1000, fanout_subs=200,
              fanout_rates=[10, 50], duration=2.0, maxrate_subs=[50, 200],
              maxrate_duration=2.0, rooms=500, rooms_rate=250, storm_clients=100,
              storm_rooms=10, storm_messages=5, slow_subs=100, slow_rate=50,
              slow_duration=4.0, slow_size=1024, slow_max_pending=50, soak_conns=1000,
              soak_seconds=10.0, soak_heartbeat=2.0, api_rooms=200)


@dataclass
class Bench:
    """What every scenario of one invocation shares."""

    sizes: Sizes
    server_core: int | None
    gen_cores: list[int | None]
    log_dir: Path
    verbose: bool = False
    roomcast_src: Path | None = None
    profile: bool = False
    mp: Any = field(default_factory=lambda: multiprocessing.get_context("fork"))

    def log(self, text: str) -> None:
        if self.verbose:
            print(f"  . {text}", flush=True)


class Workers:
    """The generator processes of one scenario and the runner's end of their Control."""

    def __init__(self, bench: Bench, slots: int = 128) -> None:
        mp = bench.mp
        self.bench = bench
        self.ctl = Control(mp.Event(), mp.Event(), mp.Event(), mp.Queue(),
                           mp.Array("q", slots, lock=False))
        self.procs: dict[int, Any] = {}
        self.inbox: dict[tuple[str, int], Any] = {}
        self._next_core = 0

    def start(self, kind: str, spec: dict[str, Any]) -> int:
        wid = len(self.procs)
        cores = self.bench.gen_cores
        core = cores[self._next_core % len(cores)]
        self._next_core += 1
        proc = self.bench.mp.Process(target=worker_main, args=(kind, wid, spec, self.ctl, core),
                                     daemon=True, name=f"bench-{kind}-{wid}")
        proc.start()
        self.procs[wid] = proc
        return wid

    def wait(self, tag: str, wids: list[int], timeout: float) -> dict[int, Any]:
        """Each worker's `tag` message, or BenchError (a worker's traceback, or a time-out)."""
        deadline = time.monotonic() + timeout
        while True:
            missing = [w for w in wids if (tag, w) not in self.inbox]
            if not missing:
                return {w: self.inbox[(tag, w)] for w in wids}
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"generator workers {missing} sent no {tag!r} within "
                                 f"{timeout:.0f} s")
            try:
                got_tag, wid, payload = self.ctl.queue.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [w for w in missing if not self.procs[w].is_alive()]
                if dead and self.ctl.queue.empty():
                    time.sleep(0.2)
                    if self.ctl.queue.empty():
                        raise BenchError(f"generator workers {dead} died before {tag!r}") from None
                continue
            if got_tag == "error":
                raise BenchError(f"generator worker {wid} failed:\n{payload}")
            self.inbox[(got_tag, wid)] = payload

    def progress(self, wids: list[int], offset: int = 0) -> int:
        return sum(self.ctl.progress[w + offset] for w in wids)

    def cpu(self) -> float:
        """CPU seconds used so far by all generator processes (psutil)."""
        total = 0.0
        for proc in self.procs.values():
            with contextlib.suppress(psutil.Error, ValueError):
                times = psutil.Process(proc.pid).cpu_times()
                total += times.user + times.system
        return total

    def finish(self, wids: list[int], timeout: float = 60.0) -> dict[int, Any]:
        self.ctl.stop.set()
        return self.wait("result", wids, timeout)

    def close(self) -> None:
        self.ctl.stop.set()
        for proc in self.procs.values():
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def _log_path(bench: Bench, target: str, label: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
    return bench.log_dir / f"{target}-{safe}.log"


@contextlib.contextmanager
def session(bench: Bench, target: str, label: str, settings: dict[str, Any] | None = None
            ) -> Iterator[tuple[Server, Workers]]:
    """A fresh server and a set of workers; both are gone when the block ends."""
    log = _log_path(bench, target, label)
    log.unlink(missing_ok=True)
    server = Server(target, free_port(), bench.server_core, log, settings, bench.roomcast_src)
    server.start()
    workers = Workers(bench)
    try:
        yield server, workers
    finally:
        workers.close()
        server.stop(timeout=5.0)  # not measured: a server slow to exit is just killed


def server_errors(server: Server) -> int:
    """Error lines and tracebacks in the server's log: each one is a finding."""
    return server.count_in_log(" error ") + server.count_in_log("Traceback")


def _split(n: int, bench: Bench) -> list[tuple[int, int]]:
    """(first index, count) per generator process for n connections."""
    procs = max(len(bench.gen_cores), math.ceil(n / PER_PROCESS))
    procs = min(procs, max(1, n))
    out = []
    first = 0
    for k in range(procs):
        count = n // procs + (1 if k < n % procs else 0)
        out.append((first, count))
        first += count
    return out


def start_fleet(workers: Workers, server: Server, n: int, rooms: list[str], *,
                sample: str = "none", cap: int = IN_FLIGHT, kind: str = "fleet"
                ) -> list[tuple[int, int]]:
    """Subscriber processes for n connections; connection i subscribes to rooms[i % len].
    At most `cap` handshakes are in flight at once, over all the processes."""
    out = []
    parts = _split(n, workers.bench)
    cap = max(1, cap // len(parts))
    for first, count in parts:
        mine = rooms[first:first + count] if len(rooms) == n else rooms
        spec = {"port": server.port, "n": count, "first": first, "rooms": mine,
                "sample": sample, "cap": cap, "auth": server.target == "roomcast"}
        out.append((workers.start(kind, spec), count))
    return out


def percentiles_ms(samples_ns: list[int]) -> dict[str, float | None]:
    if not samples_ns:
        return {"p50_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None}
    s = sorted(samples_ns)

    def at(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))] / 1e6

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "p999_ms": at(0.999), "max_ms": s[-1] / 1e6}


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _samples(results: dict[int, Any]) -> list[int]:
    out: list[int] = []
    for r in results.values():
        a = array("q")
        a.frombytes(r["samples"])
        out.extend(a)
    return out


def _per_conn(results: dict[int, Any]) -> tuple[list[int], list[str]]:
    counts: list[int] = []
    rooms: list[str] = []
    for wid in sorted(results):
        a = array("q")
        a.frombytes(results[wid]["per_conn"])
        counts.extend(a)
        rooms.extend(results[wid]["rooms"])
    return counts, rooms


# ---------------------------------------------------------------- connect ramp
def connect_ramp(bench: Bench, target: str, size: int) -> dict[str, Any]:
    """Open `size` connections (IN_FLIGHT handshakes at a time), each subscribing to one
    room: time until all are subscribed, connect times, RSS and server CPU each."""
    with session(bench, target, f"connect-{size}") as (server, workers):
        time.sleep(0.3)
        rss0 = server.rss()
        fleet = start_fleet(workers, server, size, ["bench:ramp"])
        wids = [w for w, _ in fleet]
        workers.wait("ready", wids, 120)
        spy = profiler(server, 60) if workers.bench.profile else None
        cpu0, g0 = server.cpu(), workers.cpu()
        t0 = time.monotonic_ns()
        workers.ctl.connect.set()
        stats = workers.wait("subscribed", wids, SETTLE_TIMEOUT + 30)
        t_all = max(s["last_subscribed"] for s in stats.values())
        cpu1, g1 = server.cpu(), workers.cpu()
        if spy is not None:
            spy.stop()
        wall = (time.monotonic_ns() - t0) / 1e9
        time.sleep(1.0)  # idle: what the connections cost at rest
        rss1 = server.rss()
        workers.finish(wids)
        subscribed = sum(s["subscribed"] for s in stats.values())
        connect_ms = [v for s in stats.values() for v in s["connect_ms"]]
        subscribe_ms = [v for s in stats.values() for v in s["subscribe_ms"]]
        failures: dict[str, int] = {}
        for s in stats.values():
            for k, v in s["failures"].items():
                failures[k] = failures.get(k, 0) + v
        return {
            "connections": size,
            "subscribed": subscribed,
            "failed": size - subscribed,
            "failures": failures,
            "all_subscribed_s": (t_all - t0) / 1e9 if subscribed else None,
            "connections_per_s": subscribed / ((t_all - t0) / 1e9) if subscribed else None,
            "connect_p50_ms": _quantile(connect_ms, 0.5),
            "connect_p99_ms": _quantile(connect_ms, 0.99),
            "connect_max_ms": max(connect_ms, default=None),
            "subscribed_p99_ms": _quantile(subscribe_ms, 0.99),
            "rss_before_mib": rss0 / 2**20,
            "rss_after_mib": rss1 / 2**20,
            "rss_per_conn_kib": (rss1 - rss0) / 1024 / max(1, subscribed),
            "server_cpu_ms_per_conn": (cpu1 - cpu0) * 1e3 / max(1, subscribed),
            "gen_cpu_pct": (g1 - g0) / wall * 100,
            "server_errors": server_errors(server),
        }


# ---------------------------------------------------------------- publish and measure
def _measure(workers: Workers, server: Server, fleet: list[tuple[int, int]], pub: int,
             expected_of: Any, timeout: float) -> dict[str, Any]:
    """Start publishing; wait for the publisher and then for the deliveries; measure CPU
    of the server and the generator over exactly that window."""
    wids = [w for w, _ in fleet]
    spy = profiler(server, timeout) if workers.bench.profile else None
    s0, g0 = server.cpu(), workers.cpu()
    t0 = time.monotonic()
    workers.ctl.go.set()
    published = workers.wait("result", [pub], timeout)[pub]
    # Every publish the server did not refuse must arrive; one not delivered by the end
    # of the drain window counts as lost (late or lost: the harness cannot tell).
    published["accepted"] = published["sent"] - sum(published["errors"].values())
    expected = expected_of(published["accepted"])
    deadline = time.monotonic() + DRAIN
    while workers.progress(wids) < expected and time.monotonic() < deadline:
        time.sleep(0.005)
    t1 = time.monotonic()
    s1, g1 = server.cpu(), workers.cpu()
    if spy is not None:
        spy.stop()
    results = workers.finish(wids)
    received = sum(r["messages"] for r in results.values())
    wall = t1 - t0
    out: dict[str, Any] = {
        "published": published["sent"],
        "acked": published["acked"],
        "accepted": published["accepted"],
        "publish_errors": sum(published["errors"].values()),
        "publish_seconds": published["seconds"],
        "publishes_per_s": published["accepted"] / published["seconds"]
        if published["seconds"] else None,
        "delivered": received,
        "expected": expected,
        "deliveries_per_s": received / wall,
        "window_s": wall,
        "server_cpu_pct": (s1 - s0) / wall * 100,
        "server_us_per_delivery": (s1 - s0) * 1e6 / received if received else None,
        "gen_cpu_pct": (g1 - g0) / wall * 100,
        "gen_cores": len(workers.bench.gen_cores),
        "closed_early": sum(r["lost_after_open"] for r in results.values()),
        "closes": _merge([r["closes"] for r in results.values()]),
        "server_errors": server_errors(server),
    }
    out["gen_bound"] = out["gen_cpu_pct"] >= 90 * len(workers.bench.gen_cores)
    out.update(percentiles_ms(_samples(results)))
    out["_results"] = results
    return out


def _merge(dicts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _losses(out: dict[str, Any], expected_per_conn: list[int]) -> None:
    counts, _ = _per_conn(out.pop("_results"))
    out["lost"] = sum(max(0, e - c) for e, c in zip(expected_per_conn, counts, strict=True))
    out["extra"] = sum(max(0, c - e) for e, c in zip(expected_per_conn, counts, strict=True))


def fanout(bench: Bench, target: str, subs: int, rate: int, duration: float,
           stalled: bool = False, settings: dict[str, Any] | None = None,
           label: str = "fanout", size: int = 100) -> dict[str, Any]:
    """`subs` subscribers of one room, one publisher at `rate`/s of `size`-byte stamped
    payloads; with `stalled`, one more subscriber that stops reading."""
    with session(bench, target, f"{label}-{subs}x{rate}", settings) as (server, workers):
        fleet = start_fleet(workers, server, subs, ["bench:fan"], sample="all")
        pub = workers.start("publisher", {"port": server.port, "mode": "fixed", "rate": rate,
                                          "duration": duration, "rooms": ["bench:fan"],
                                          "size": size})
        stall = None
        if stalled:
            stall = workers.start("stalled", {"port": server.port, "room": "bench:fan",
                                              "stall": duration + 0.5})
        every = [w for w, _ in fleet] + [pub] + ([stall] if stall is not None else [])
        workers.wait("ready", every, 120)
        workers.ctl.connect.set()
        workers.wait("subscribed", [w for w, _ in fleet] + ([stall] if stall is not None else []),
                     SETTLE_TIMEOUT + 30)
        out = _measure(workers, server, fleet, pub, lambda acked: acked * subs,
                       duration + 60)
        _losses(out, [out["accepted"]] * subs)
        if stall is not None:
            got = workers.wait("result", [stall], 60)[stall]
            out["stalled_close_code"] = got.get("code")
            out["stalled_how"] = got.get("how")
            out["stalled_messages"] = got.get("messages")
        out.update({"subscribers": subs, "rate": rate, "payload_bytes": size})
        return out


def maxrate(bench: Bench, target: str, subs: int, duration: float) -> dict[str, Any]:
    """One room of `subs`; the publisher goes as fast as the acks (64 in flight) and the
    slowest receiver process (256 messages ahead at most) allow."""
    settings = {"max_pending": 4096}
    with session(bench, target, f"maxrate-{subs}", settings) as (server, workers):
        fleet = start_fleet(workers, server, subs, ["bench:max"], sample="chunk")
        pub = workers.start("publisher", {
            "port": server.port, "mode": "max", "duration": duration, "rooms": ["bench:max"],
            "window": 256, "ack_window": 64, "receivers": fleet,
        })
        workers.wait("ready", [w for w, _ in fleet] + [pub], 120)
        workers.ctl.connect.set()
        workers.wait("subscribed", [w for w, _ in fleet], SETTLE_TIMEOUT + 30)
        out = _measure(workers, server, fleet, pub, lambda acked: acked * subs, duration + 60)
        _losses(out, [out["accepted"]] * subs)
        out["subscribers"] = subs
        return out


def many_rooms(bench: Bench, target: str, rooms: int, rate: int, duration: float
               ) -> dict[str, Any]:
    """`rooms` rooms with one subscriber each; one publisher at `rate`/s round-robin."""
    names = [f"bench:r{i}" for i in range(rooms)]
    with session(bench, target, f"rooms-{rooms}x{rate}") as (server, workers):
        fleet = start_fleet(workers, server, rooms, names, sample="all")
        pub = workers.start("publisher", {"port": server.port, "mode": "fixed", "rate": rate,
                                          "duration": duration, "rooms": names})
        workers.wait("ready", [w for w, _ in fleet] + [pub], 120)
        workers.ctl.connect.set()
        workers.wait("subscribed", [w for w, _ in fleet], SETTLE_TIMEOUT + 30)
        out = _measure(workers, server, fleet, pub, lambda acked: acked, duration + 60)
        n = out["accepted"]
        _losses(out, [n // rooms + (1 if i < n % rooms else 0) for i in range(rooms)])
        out.update({"rooms": rooms, "rate": rate})
        return out


# ---------------------------------------------------------------- reconnect storm
def reconnect_storm(bench: Bench, clients: int, rooms: int, messages: int) -> dict[str, Any]:
    """`clients` with history in `rooms` rooms; the server is stopped (SIGTERM: 1001 to
    everyone) and started again on the same port; clients come back with `since`."""
    names = [f"bench:h{i}" for i in range(rooms)]
    settings = {"shutdown_grace": 0.5}
    per_room = clients // rooms
    with session(bench, "roomcast", f"reconnect-{clients}", settings) as (server, workers):
        fleet = start_fleet(workers, server, clients, names, kind="storm")
        wids = [w for w, _ in fleet]
        pub = workers.start("publisher", {"port": server.port, "mode": "fixed",
                                          "rate": 1000, "duration": rooms * messages / 1000,
                                          "rooms": names})
        workers.wait("ready", [*wids, pub], 120)
        workers.ctl.connect.set()
        workers.wait("subscribed", wids, SETTLE_TIMEOUT + 30)
        workers.ctl.go.set()
        published = workers.wait("result", [pub], 60)[pub]
        expected = (published["sent"] - sum(published["errors"].values())) * per_room
        deadline = time.monotonic() + DRAIN
        while workers.progress(wids) < expected and time.monotonic() < deadline:
            time.sleep(0.005)
        received_before = workers.progress(wids)
        t_kill = time.monotonic_ns()
        server.stop()
        t_exit = time.monotonic_ns()
        errors_before = server_errors(server)
        server.log = server.log.with_name(server.log.stem + "-restarted.log")
        server.start()
        t_ready = time.monotonic_ns()
        deadline = time.monotonic() + 30
        while workers.progress(wids, offset=64) < clients and time.monotonic() < deadline:
            time.sleep(0.005)
        results = workers.finish(wids)
        t_back = [t for r in results.values() for t in r["t_back"]]
        back = sum(r["back"] for r in results.values())
        recovered = _merge([r["recovered"] for r in results.values()])
        return {
            "clients": clients,
            "published_before": published["sent"],
            "lost_before_restart": max(0, expected - received_before),
            "restart_s": (t_ready - t_kill) / 1e9,
            "server_exit_s": (t_exit - t_kill) / 1e9,
            "back": back,
            "not_back": clients - back,
            "all_back_from_ready_s": (max(t_back) - t_ready) / 1e9 if back == clients else None,
            "all_back_from_kill_s": (max(t_back) - t_kill) / 1e9 if back == clients else None,
            "back_p50_from_ready_s": ((_quantile([float(t) for t in t_back], 0.5) or 0)
                                      - t_ready) / 1e9 if t_back else None,
            "recovered_true": recovered.get("true", 0),
            "recovered_false": recovered.get("false", 0),
            "close_codes": _merge([r["close_codes"] for r in results.values()]),
            "reconnect_attempts": sum(r["attempts"] for r in results.values()),
            "server_errors": errors_before + server_errors(server),
        }


# ---------------------------------------------------------------- soak
def soak(bench: Bench, conns: int, seconds: float, heartbeat: float) -> dict[str, Any]:
    """Hold `conns` connections for `seconds` with heartbeats every `heartbeat` seconds."""
    settings = {"heartbeat_interval": heartbeat, "heartbeat_timeout": heartbeat * 3.6}
    with session(bench, "roomcast", f"soak-{conns}", settings) as (server, workers):
        fleet = start_fleet(workers, server, conns, ["bench:soak"])
        wids = [w for w, _ in fleet]
        workers.wait("ready", wids, 120)
        workers.ctl.connect.set()
        stats = workers.wait("subscribed", wids, SETTLE_TIMEOUT + 30)
        subscribed = sum(s["subscribed"] for s in stats.values())
        s0, rss0 = server.cpu(), server.rss()
        end = time.monotonic() + seconds
        rss_max = rss0
        while time.monotonic() < end and server.alive():
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
            rss_max = max(rss_max, server.rss())
        s1 = server.cpu()
        alive = server.alive()
        results = workers.finish(wids)
        still_open = sum(r["open"] for r in results.values())
        return {
            "connections": conns,
            "subscribed": subscribed,
            "held_s": seconds,
            "still_open": still_open,
            "dropped": subscribed - still_open,
            "pings_min": min(r["pings_min"] for r in results.values()),
            "pings_expected": int(seconds // heartbeat),
            "server_alive": alive,
            "server_cpu_pct": (s1 - s0) / seconds * 100,
            "rss_mib": rss_max / 2**20,
            "closes": _merge([r["closes"] for r in results.values()]),
            "server_errors": server_errors(server),
        }
