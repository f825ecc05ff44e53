"""What the Redis backplane costs: CPU per publish, cross-node latency, each node's rates.

    .venv/bin/python -m benchmarks.cluster_latency [--sentinel | --cluster]
        [--only latency throughput intake coredis publish-cost]
        [--publish-rate 5000] [--publish-count 20000] [--publish-rounds 3] [--profile FILE]

Starts its own Redis (no persistence) and `roomcast serve` processes on 127.0.0.1, then
measures:

- publish cost (`publish-cost`): publishers on node A (16 connections, round robin, at most
  32 unanswered publishes each) at a fixed total rate (5,000/s), one subscriber on node B;
  per publish, the CPU time A spent (its process's user + system time over the run), B's
  per delivered message, each Redis process's (summed over the primaries of a cluster;
  replicas and sentinels apart) and this client's; the cross-node p50/p99 delivery
  latency at that rate; the rate achieved (the client is one epoll loop and says when a
  node, not it, held the rate back: `saturated`). As a reference, the same on one node
  with the memory backplane (its CPU covers the publish and the delivery). `--profile`
  adds one more run on Redis while py-spy samples node A, and summarizes where A's time
  went (self and cumulative, by function and by line);
- latency, publisher's send -> subscriber's receive, at a steady rate well below
  saturation: one node with the memory backplane; one node on Redis (publisher and
  subscriber on the same node); two nodes on Redis (publisher on one, subscriber on the
  other). p50/p99 in milliseconds, the median over interleaved rounds (on a shared 2-core
  machine p99 mostly measures who else wanted the CPU: the load average is recorded);
- the cross-node throughput: publishers on node A as fast as they can (a window of
  unanswered publishes each), one subscriber on node B;
- node B's pub/sub intake: messages SPUBLISHed straight into the room's shard channel (as
  the publish script would) and counted at B's subscriber, with B's CPU seconds per
  message, so the reader's own cost shows apart from the publish path.

With `--sentinel` the nodes use `redis+sentinel://` (a master, a replica and three
sentinels): the same measurements with asynchronous replication to a replica on the same
machine. With `--cluster` they use `redis+cluster://` over a Redis Cluster of 3 primaries
with a replica each (benchmarks/redis_topologies.py starts it).

Every process is ours and is killed by PID at the end; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import jwt
import trio
import trio_websocket

from benchmarks.redis_topologies import (
    Topology,
    command_stats,
    free_port,
    primary_for,
    redis_server,
    redis_topology,
)
from benchmarks.wsclient import (
    CONNECTED,
    ERROR,
    PUBLISHED,
    SAMPLE_ALL,
    SUBSCRIBED,
    Conn,
    Loop,
    client_frame,
    stamp_payload,
)

__all__ = ["SECRET", "cpu_seconds", "free_port", "redis_server", "token"]  # workers_scaling

SECRET = "bench-secret-0123456789-0123456789-abcdef"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def token(sub: str) -> str:
    now = int(time.time())
    # No iat: a server whose wall clock is derived from its monotonic clock at start sees
    # a token minted this second as issued in the future once the system clock was stepped.
    return jwt.encode({"sub": sub, "exp": now + 3600, "rooms": ["*"],
                       "publish": ["*"]}, SECRET, algorithm="HS256")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class Node:
    """One `roomcast serve` process."""

    def __init__(self, name: str, backplane: str) -> None:
        self.name = name
        self.port = free_port()
        command = [sys.executable, "-m", "roomcast", "serve", "--jwt-secret", SECRET,
                   "--port", str(self.port), "--http-port", "0", "--node", name,
                   "--backplane", backplane, "--rate-per-second", "1000000",
                   "--rate-burst", "1000000", "--max-pending", "100000",
                   "--max-connections-per-user", "1000"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - a file, not a pipe nobody reads
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        deadline = time.monotonic() + 30
        while True:
            self.log.seek(0)
            if b" listening " in self.log.read():
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                tail = self.log.read()[-1500:].decode(errors="replace")
                self.kill()
                raise RuntimeError(f"node {name} (--backplane {backplane}) did not start; "
                                   f"its stderr ends with:\n{tail}")
            time.sleep(0.05)

    def url(self, sub: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?token={token(sub)}"

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


@contextmanager
def nodes(*specs: tuple[str, str]) -> Iterator[list[Node]]:
    started: list[Node] = []
    try:
        for name, backplane in specs:
            started.append(Node(name, backplane))
        time.sleep(0.3)  # let the backplane connect and register
        yield started
    finally:
        for node in started:
            node.kill()


@asynccontextmanager
async def ws(url: str) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    async with trio_websocket.open_websocket_url(url, connect_timeout=10) as conn:
        hello = json.loads(await conn.get_message())
        assert hello["type"] == "connected", hello
        yield conn


async def subscribe(conn: trio_websocket.WebSocketConnection, room: str) -> dict[str, Any]:
    await conn.send_message(json.dumps({"type": "subscribe", "id": "s", "rooms": [room]}))
    while True:
        frame: dict[str, Any] = json.loads(await conn.get_message())
        if frame["type"] == "subscribed":
            return frame


async def latency(pub_url: str, sub_url: str, messages: int, rate: float) -> dict[str, float]:
    """p50/p99 (ms) from the publisher's send to the subscriber's receive, at `rate`/s."""
    room = f"lat-{time.monotonic_ns()}"
    got: list[float] = []
    async with ws(pub_url) as pub, ws(sub_url) as sub:
        await subscribe(sub, room)
        done = trio.Event()

        async def read() -> None:
            while len(got) < messages:
                frame = json.loads(await sub.get_message())
                if frame.get("type") == "message":
                    got.append(time.perf_counter() - frame["data"]["t"])
            done.set()

        async def drain_replies() -> None:
            while True:
                await pub.get_message()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            nursery.start_soon(drain_replies)
            start = time.perf_counter()
            for i in range(messages):
                await trio.sleep_until(trio.current_time() + max(
                    0.0, start + i / rate - time.perf_counter()))
                await pub.send_message(json.dumps({
                    "type": "publish", "room": room, "data": {"t": time.perf_counter()}}))
            with trio.fail_after(30):
                await done.wait()
            nursery.cancel_scope.cancel()
    got.sort()
    return {"p50_ms": 1000 * statistics.median(got),
            "p99_ms": 1000 * got[int(len(got) * 0.99) - 1],
            "max_ms": 1000 * got[-1]}


async def throughput(pub_url: str, sub_url: str, messages: int, publishers: int,
                     window: int, pub_pid: int, sub_pid: int) -> dict[str, float]:
    """Publishers on one node as fast as they go; messages/s seen by a subscriber."""
    room = f"tp-{time.monotonic_ns()}"
    per = messages // publishers
    total = per * publishers
    async with ws(sub_url) as sub:
        await subscribe(sub, room)
        received = 0
        finished = trio.Event()

        async def read() -> None:
            nonlocal received
            while received < total:
                if (await sub.get_message()).startswith('{"type":"message"'):
                    received += 1
            finished.set()

        async def publisher(k: int) -> None:
            async with ws(pub_url) as pub:
                credit = trio.Semaphore(window)

                async def replies() -> None:
                    for _ in range(per):
                        await pub.get_message()
                        credit.release()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(replies)
                    body = json.dumps({"type": "publish", "room": room, "data": {"k": k}})
                    for _ in range(per):
                        await credit.acquire()
                        await pub.send_message(body)

        before = (cpu_seconds(pub_pid), cpu_seconds(sub_pid), own_cpu())
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            for k in range(publishers):
                nursery.start_soon(publisher, k)
            with trio.fail_after(120):
                await finished.wait()
        elapsed = time.perf_counter() - start
        after = (cpu_seconds(pub_pid), cpu_seconds(sub_pid), own_cpu())
    pub_cpu, sub_cpu, client_cpu = (
        1e6 * (y - x) / total for x, y in zip(before, after, strict=True))
    out = {"messages_per_s": total / elapsed, "client_cpu_us_per_message": client_cpu}
    if pub_pid == sub_pid:
        out["node_cpu_us_per_message"] = pub_cpu
    else:
        out["pub_node_cpu_us_per_message"] = pub_cpu
        out["sub_node_cpu_us_per_message"] = sub_cpu
    return out


async def intake(topology: Topology, sub_url: str, messages: int, sub_pid: int
                 ) -> dict[str, float]:
    """Messages SPUBLISHed straight into a room's shard channel (as the publish script
    would, on the primary that owns it), counted at a subscriber."""
    from roomcast.backplane.redis.keys import room_channel

    room = f"in-{time.monotonic_ns()}"
    channel = room_channel(room)
    redis_port = primary_for(topology, channel)
    async with ws(sub_url) as sub:
        reply = await subscribe(sub, room)
        epoch = reply["rooms"][room]["epoch"].encode()
        commands = []
        for offset in range(1, messages + 1):
            payload = (b'{"type":"message","room":"%s","offset":%d,"event":null,'
                       b'"data":{"n":%d},"sender":null,"ts":"2026-01-01T00:00:00.000Z"}'
                       % (room.encode(), offset, offset))
            body = b"m%d %s null\n%s" % (offset, epoch, payload)
            commands.append(b"*3\r\n$8\r\nSPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                            % (len(channel), channel, len(body), body))
        received = 0
        finished = trio.Event()

        async def read() -> None:
            nonlocal received
            while received < messages:
                if (await sub.get_message()).startswith('{"type":"message"'):
                    received += 1
            finished.set()

        stream = await trio.open_tcp_stream("127.0.0.1", redis_port)
        async with stream, trio.open_nursery() as nursery:

            async def discard() -> None:
                while await stream.receive_some(65536):
                    pass

            nursery.start_soon(discard)
            nursery.start_soon(read)
            cpu0, own0 = cpu_seconds(sub_pid), own_cpu()
            start = time.perf_counter()
            for i in range(0, messages, 500):
                await stream.send_all(b"".join(commands[i:i + 500]))
            with trio.fail_after(120):
                await finished.wait()
            elapsed = time.perf_counter() - start
            cpu, own = cpu_seconds(sub_pid) - cpu0, own_cpu() - own0
            nursery.cancel_scope.cancel()
    return {"messages_per_s": messages / elapsed,
            "node_cpu_us_per_message": 1e6 * cpu / messages,
            "client_cpu_us_per_message": 1e6 * own / messages}


async def coredis_reader(redis_port: int, messages: int) -> dict[str, float]:
    """coredis alone: push messages read from one subscribed connection, nothing else."""
    from coredis.connection import TCPConnection, TCPLocation

    channel = b"rc:bench"
    body = b"m1 e-0 null\n" + b"x" * 150
    command = (b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
               % (len(channel), channel, len(body), body))
    conn = TCPConnection(TCPLocation("127.0.0.1", redis_port))
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        conn.send_command(b"SUBSCRIBE", channel)
        await conn.create_request(b"PING")
        stream = await trio.open_tcp_stream("127.0.0.1", redis_port)
        async with stream, trio.open_nursery() as inner:

            async def discard() -> None:
                while await stream.receive_some(65536):
                    pass

            async def flood() -> None:
                for _ in range(0, messages, 500):
                    await stream.send_all(command * 500)

            inner.start_soon(discard)
            own0 = own_cpu()
            start = time.perf_counter()
            inner.start_soon(flood)
            count = 0
            async for push in conn.push_messages:
                if push[0] == b"message":
                    count += 1
                    if count == messages:
                        break
            elapsed = time.perf_counter() - start
            own = own_cpu() - own0
            inner.cancel_scope.cancel()
        conn.invalidate()
        nursery.cancel_scope.cancel()
    return {"messages_per_s": messages / elapsed, "cpu_us_per_message": 1e6 * own / messages}


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class RateLoad(Loop):
    """Publisher connections to one node at a fixed total rate and a subscriber on another
    (or the same) node, all in one epoll loop (benchmarks.wsclient, raw sockets), so that
    the client is not what limits the rate; each phase says whether it held the rate (the
    rate achieved, how far the sends fell behind, how often a window was full)."""

    def __init__(self, pub_port: int, sub_port: int, room: str, publishers: int, window: int,
                 size: int) -> None:
        super().__init__(pub_port, sample=SAMPLE_ALL)
        self.room = room
        self.window = window
        self.size = size
        self.pubs = [Conn(k, token=token(f"pub{k}")) for k in range(publishers)]
        self.sub = Conn(publishers, room, token=token("sub"))
        self.sent = [0] * publishers
        self.acked = [0] * publishers
        self.opened = 0
        self.subscribed = False
        self.errors: Counter[str] = Counter()
        self.lost: list[str] = []
        self._head = b'{"type":"publish","room":%b,"data":' % json.dumps(room).encode()
        for conn in self.pubs:
            self._connect_to(conn, pub_port)
        self._connect_to(self.sub, sub_port)

    def _connect_to(self, conn: Conn, port: int) -> None:
        self.port = port  # Loop.connect dials self.port
        self.connect(conn)

    def on_text(self, conn: Conn, payload: bytes) -> None:
        if payload.startswith(PUBLISHED):
            self.acked[conn.index] += 1
        elif payload.startswith(CONNECTED):
            self.opened += 1
            if conn is self.sub:
                self.send_text(conn, json.dumps(
                    {"type": "subscribe", "id": "s", "rooms": [self.room]}).encode())
        elif payload.startswith(SUBSCRIBED):
            self.subscribed = True
        elif payload.startswith(ERROR):
            self.errors[payload[:200].decode(errors="replace")] += 1

    def on_closed(self, conn: Conn, code: int | None, why: str) -> None:
        self.lost.append(f"connection {conn.index} closed ({code} {why})")

    def _check(self, what: str, deadline: float) -> None:
        if self.lost or self.errors:
            raise RuntimeError(f"{what}: {self.lost} {dict(self.errors)} "
                               f"{dict(self.failures)}; see the nodes' logs")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: timed out (sent {sum(self.sent)}, acked "
                               f"{sum(self.acked)}, delivered {self.sub.messages})")

    def ready(self, timeout: float = 30) -> None:
        """Every connection open, the subscriber subscribed."""
        deadline = time.monotonic() + timeout
        while self.opened < len(self.pubs) + 1 or not self.subscribed:
            self._check("connecting the rate load", deadline)
            self.poll(0.05)

    def phase(self, count: int, rate: float, seconds: float = math.inf) -> dict[str, Any]:
        """Publish `count` stamped messages at `rate`/s, or fewer if `seconds` run out first
        (round robin over the connections, each with at most `window` unanswered), then
        wait until every one is answered and delivered. Latencies of this phase's
        deliveries are left in self.samples."""
        self.samples = array("q")
        delivered0 = self.sub.messages
        n = len(self.pubs)
        sent = waits = 0
        behind = 0.0
        t0 = time.monotonic()
        stop = t0 + seconds
        deadline = t0 + min(2 * count / rate, 2 * seconds) + 30
        while sent < count:
            now = time.monotonic()
            if now > stop:
                count = sent
                break
            due = min(count, int((now - t0) * rate) + 1)
            frames: list[list[bytes]] = [[] for _ in range(n)]
            while sent < due:
                k = sent % n
                if self.sent[k] - self.acked[k] >= self.window:
                    waits += 1  # the node is behind: wait for its answers
                    break
                frames[k].append(client_frame(
                    self._head + stamp_payload(self.size, time.monotonic_ns()) + b"}",
                    self.pubs[k].mask))
                self.sent[k] += 1
                sent += 1
            for k, batch in enumerate(frames):
                if batch:
                    self.send(self.pubs[k], b"".join(batch))
            lag = now - (t0 + sent / rate)
            behind = max(behind, lag)
            self._check("publishing", deadline)
            self.poll(0.001 if sent < due else max(0.0, t0 + sent / rate - time.monotonic()))
        t_last = time.monotonic()
        while self.sub.messages - delivered0 < count or sum(self.acked) < sum(self.sent):
            self._check("waiting for answers and deliveries", deadline)
            self.poll(0.01)
        achieved = (count - 1) / (t_last - t0)
        return {"publishes": count, "rate_target": rate, "rate_achieved": achieved,
                "saturated": achieved < 0.97 * rate,
                "behind_schedule_max_ms": 1000 * max(0.0, behind), "waits_for_window": waits,
                "seconds": time.monotonic() - t0}


def _percentiles(samples_ns: array[int]) -> dict[str, float]:
    got = sorted(samples_ns)
    return {"p50_ms": got[len(got) // 2] / 1e6, "p99_ms": got[int(len(got) * 0.99) - 1] / 1e6,
            "max_ms": got[-1] / 1e6}


def _py_spy() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    found = beside if os.path.exists(beside) else shutil.which("py-spy")
    if found is None:
        sys.exit("--profile needs py-spy: run `.venv/bin/pip install py-spy`")
    return found


def publish_cost(pub: Node, sub: Node, redis_pids: dict[str, list[int]],
                 args: argparse.Namespace, profile: str | None = None) -> dict[str, Any]:
    """CPU per publish on each process at a fixed publish rate, and the delivery latency.

    Publishers on `pub`, one subscriber on `sub` (the same node for the memory backplane).
    With `profile`, py-spy records `pub` for --profile-seconds into that file (raw, folded
    stacks) while the phase runs a little longer than that."""
    load = RateLoad(pub.port, sub.port, f"cost-{time.monotonic_ns()}", args.publishers,
                    args.window, args.payload_size)
    spy: subprocess.Popen[bytes] | None = None
    try:
        load.ready()
        load.phase(max(100, args.publish_count // 10), args.publish_rate)  # warm-up
        count, seconds = args.publish_count, math.inf
        if profile is not None:  # publish for longer than py-spy records
            count, seconds = 10**9, args.profile_seconds + 2
            spy = subprocess.Popen(
                [_py_spy(), "record", "--pid", str(pub.process.pid), "--duration",
                 str(args.profile_seconds), "--rate", str(args.profile_hz), "--format", "raw",
                 "-o", profile], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE)
        pids = {"pub": [pub.process.pid], "sub": [sub.process.pid]}
        pids.update({f"redis_{role}": p for role, p in redis_pids.items()})
        before = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
        own0 = own_cpu()
        out = load.phase(count, args.publish_rate, seconds)
        count = out["publishes"]
        after = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
        own = own_cpu() - own0
        if spy is not None:
            _, err = spy.communicate(timeout=args.profile_seconds + 30)
            if spy.returncode != 0:
                raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
        out.update(_percentiles(load.samples))
    finally:
        load.abort_all()
        if spy is not None and spy.poll() is None:
            os.kill(spy.pid, signal.SIGKILL)
            spy.wait()
    us = {name: 1e6 * (after[name] - before[name]) / count for name in pids}
    if pub is sub:
        out["node_cpu_us_per_publish"] = us["pub"]
    else:
        out["pub_node_cpu_us_per_publish"] = us["pub"]
        out["sub_node_cpu_us_per_message"] = us["sub"]
    plural = {"primary": "primaries", "replica": "replicas", "sentinel": "sentinels"}
    for name, ps in redis_pids.items():
        key = plural.get(name, name) if len(ps) > 1 else name
        out[f"redis_{key}_cpu_us_per_publish"] = us[f"redis_{name}"]
    out["client_cpu_us_per_publish"] = 1e6 * own / count
    return out


def summarize_profile(path: str, top: int = 20) -> dict[str, Any]:
    """Self and cumulative shares of py-spy's folded stacks (samples where the node was
    running, not waiting), by function and by line; frames in nearly every sample (the
    entry point, the run loop) are left out of the cumulative list."""
    self_fn: Counter[str] = Counter()
    self_line: Counter[str] = Counter()
    total_fn: Counter[str] = Counter()
    samples = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(n)
            samples += count
            frames = stack.split(";")
            self_line[frames[-1]] += count
            names = [frame.split(":")[0] + ")" if ":" in frame else frame for frame in frames]
            self_fn[names[-1]] += count
            for name in set(names):
                total_fn[name] += count

    def shares(counter: Counter[str]) -> list[str]:
        return [f"{100 * c / samples:5.1f}%  {name}" for name, c in counter.most_common()
                if c < 0.9 * samples][:top]

    return {"samples": samples, "self_by_function": shares(self_fn),
            "self_by_line": shares(self_line), "cumulative_by_function": shares(total_fn)}


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    out["saturated"] = any(r["saturated"] for r in runs)
    for key in runs[0]:
        if key.endswith("cpu_us_per_publish") or key.endswith("per_message") or key == "p99_ms":
            out[f"{key}_each_round"] = [round(r[key], 1) for r in runs]
    return out


def publish_costs(topology: Topology, args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved rounds: one node on the memory backplane, then two nodes on Redis
    (publishers on A, the subscriber on B); then, with --profile, a profiled run on A."""
    results: dict[str, Any] = {}
    with nodes(("solo", "memory"), ("a", topology.url), ("b", topology.url)) as (solo, a, b):
        memory: list[dict[str, Any]] = []
        redis: list[dict[str, Any]] = []
        for _ in range(args.publish_rounds):
            memory.append(publish_cost(solo, solo, {}, args))
            redis.append(publish_cost(a, b, topology.pids, args))
        results["memory_one_node"] = _medians(memory)
        results[f"{topology.kind}_redis_cross_node"] = _medians(redis)
        # Over every round, warm-ups included: what the scripts cost inside Redis.
        results["redis_primaries_commandstats"] = dict(list(
            command_stats(topology.ports["primary"]).items())[:6])
        if args.profile:
            results["profiled_run_on_a"] = publish_cost(a, b, topology.pids, args,
                                                        profile=args.profile)
            results["profile_of_a"] = summarize_profile(args.profile)
    return results


MEASUREMENTS = ("latency", "throughput", "intake", "coredis", "publish-cost")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    only = set(args.only)
    results: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    kind = "cluster" if args.cluster else "sentinel" if args.sentinel else "single"
    with redis_topology(kind) as topology:
        url, redis_port = topology.url, topology.port
        results["backplane"] = url.split("://")[0]
        results["redis_processes"] = {role: len(p) for role, p in topology.pids.items()}
        print(f"redis ({kind}) is up: {url}, PIDs {topology.pids}", file=sys.stderr)
        if "latency" in only:
            results["latency"] = {"messages": args.messages, "rate": args.rate,
                                  "rounds": args.rounds}
            with nodes(("solo", "memory"), ("a", url), ("b", url)) as (solo, a, b):
                # Interleaved rounds, so a burst of load from elsewhere hits every scenario
                # alike.
                scenarios = {"latency_memory_one_node": (solo, solo),
                             "latency_redis_same_node": (a, a),
                             "latency_redis_cross_node": (a, b)}
                runs: dict[str, list[dict[str, float]]] = {name: [] for name in scenarios}
                for _ in range(args.rounds):
                    for name, (pub, sub) in scenarios.items():
                        runs[name].append(await latency(
                            pub.url("p"), sub.url("s"), args.messages, args.rate))
                for name, got in runs.items():
                    results[name] = {key: statistics.median(r[key] for r in got)
                                     for key in got[0]}
                    results[name]["p99_ms_each_round"] = [r["p99_ms"] for r in got]
        if only & {"throughput", "intake"}:
            with nodes(("a", url), ("b", url)) as (a, b):
                if "throughput" in only:
                    results["throughput_cross_node"] = await throughput(
                        a.url("p"), b.url("s"), args.flood, 4, 64, a.process.pid,
                        b.process.pid)
                if "intake" in only:
                    results["intake_one_node"] = await intake(
                        topology, b.url("s"), args.flood, b.process.pid)
        if "throughput" in only:
            with nodes(("solo2", "memory")) as (solo,):
                results["throughput_memory_one_node"] = await throughput(
                    solo.url("p"), solo.url("s"), args.flood, 4, 64, solo.process.pid,
                    solo.process.pid)
        if "coredis" in only:
            results["coredis_reader_alone"] = await coredis_reader(redis_port, args.flood)
        if "publish-cost" in only:
            results["publish_cost"] = {
                "rate": args.publish_rate, "publishes": args.publish_count,
                "rounds": args.publish_rounds, "publishers": args.publishers,
                "window": args.window, "payload_bytes": args.payload_size,
                **publish_costs(topology, args)}
    results["load_after"] = os.getloadavg()[0]
    return results


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS, default=list(MEASUREMENTS),
                        help="the measurements to run (default: all)")
    parser.add_argument("--messages", type=int, default=2000, help="per latency run")
    parser.add_argument("--rate", type=float, default=500.0, help="publishes/s in latency runs")
    parser.add_argument("--flood", type=int, default=20000, help="messages per rate run")
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds (median)")
    topology = parser.add_mutually_exclusive_group()
    topology.add_argument("--sentinel", action="store_true",
                          help="nodes on redis+sentinel:// (master, replica, three sentinels)")
    topology.add_argument("--cluster", action="store_true",
                          help="nodes on redis+cluster:// (3 primaries, 1 replica each)")
    cost = parser.add_argument_group("publish cost")
    cost.add_argument("--publish-rate", type=float, default=5000.0,
                      help="publishes/s, all publisher connections together")
    cost.add_argument("--publish-count", type=int, default=20000, help="publishes per round")
    cost.add_argument("--publish-rounds", type=int, default=3, help="rounds (median)")
    cost.add_argument("--publishers", type=int, default=16, help="publisher connections")
    cost.add_argument("--window", type=int, default=32,
                      help="unanswered publishes per publisher connection at most")
    cost.add_argument("--payload-size", type=int, default=100, help="bytes of `data` JSON")
    cost.add_argument("--profile", metavar="FILE",
                      help="after the rounds, py-spy node A during one more run into FILE "
                           "(folded stacks) and summarize it")
    cost.add_argument("--profile-seconds", type=int, default=10)
    cost.add_argument("--profile-hz", type=int, default=200, help="py-spy samples per second")
    args = parser.parse_args()
    results = trio.run(main, args)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    cli()
