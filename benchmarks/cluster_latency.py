"""What the Redis backplane costs: cross-node latency and each node's message rate.

    .venv/bin/python -m benchmarks.cluster_latency [--messages 2000] [--rate 500] [--sentinel]

Starts its own redis-server (no persistence) and `roomcast serve` processes on 127.0.0.1,
then measures:

- latency, publisher's send -> subscriber's receive, at a steady rate well below
  saturation: one node with the memory backplane; one node on Redis (publisher and
  subscriber on the same node); two nodes on Redis (publisher on one, subscriber on the
  other). p50/p99 in milliseconds, the median over interleaved rounds (on a shared 2-core
  machine p99 mostly measures who else wanted the CPU: the load average is recorded);
- the cross-node throughput: publishers on node A as fast as they can (a window of
  unanswered publishes each), one subscriber on node B;
- node B's pub/sub intake: messages PUBLISHed straight into the room's Redis channel (as
  the publish script would) and counted at B's subscriber, with B's CPU seconds per
  message, so the reader's own cost shows apart from the publish path.

With `--sentinel` the nodes on Redis use `redis+sentinel://` (a master, a replica and three
sentinels, all started here): the same measurements with asynchronous replication to a
replica on the same machine.

Every process is ours and is killed by PID at the end; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import jwt
import trio
import trio_websocket

SECRET = "bench-secret-0123456789-0123456789-abcdef"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


@contextmanager
def redis_server(*extra: str, port: int = 0, config: str | None = None) -> Iterator[int]:
    """A redis-server (a sentinel with `config`) on a free port, killed by PID at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: run `bash scripts/setup.sh --test`")
    port = port or free_port()
    args = ([config, "--sentinel"] if config else
            ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             *extra])
    process = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield port
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def ask(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(command + b"\r\n")
        return s.recv(65536)


@contextmanager
def sentinel_topology() -> Iterator[tuple[int, str]]:
    """A master, a replica and three sentinels; yields the master's port and the URL."""
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        master = stack.enter_context(redis_server())
        replica = stack.enter_context(redis_server("--replicaof", "127.0.0.1", str(master)))
        while b"master_link_status:up" not in ask(replica, b"INFO replication"):
            time.sleep(0.05)
        ports = []
        for i in range(3):
            port = free_port()
            conf = f"{tmp}/sentinel{i}.conf"
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind 127.0.0.1\ndir {tmp}\n"
                        f"sentinel monitor m 127.0.0.1 {master} 2\n"
                        "sentinel down-after-milliseconds m 1000\n")
            ports.append(stack.enter_context(redis_server(port=port, config=conf)))
        deadline = time.monotonic() + 30
        while not all(b"3 usable" in ask(p, b"SENTINEL ckquorum m") for p in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not find each other")
            time.sleep(0.1)
        hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
        yield master, f"redis+sentinel://{hosts}/m/0"


@contextmanager
def redis_backplane(sentinel: bool) -> Iterator[tuple[int, str]]:
    """The (master's) port and the backplane URL: one redis-server, or Sentinel."""
    if sentinel:
        with sentinel_topology() as started:
            yield started
    else:
        with redis_server() as port:
            yield port, f"redis://127.0.0.1:{port}/0"


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
                raise RuntimeError(f"node {name} did not start")
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


async def intake(redis_port: int, sub_url: str, messages: int, sub_pid: int) -> dict[str, float]:
    """Messages PUBLISHed straight into a room's channel, counted at a subscriber."""
    room = f"in-{time.monotonic_ns()}"
    async with ws(sub_url) as sub:
        reply = await subscribe(sub, room)
        epoch = reply["rooms"][room]["epoch"].encode()
        channel = f"rc:c:{room}".encode()
        commands = []
        for offset in range(1, messages + 1):
            payload = (b'{"type":"message","room":"%s","offset":%d,"event":null,'
                       b'"data":{"n":%d},"sender":null,"ts":"2026-01-01T00:00:00.000Z"}'
                       % (room.encode(), offset, offset))
            body = b"m%d %s null\n%s" % (offset, epoch, payload)
            commands.append(b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
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


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"messages": args.messages, "rate": args.rate,
                               "rounds": args.rounds, "load_before": os.getloadavg()[0]}
    with redis_backplane(args.sentinel) as (redis_port, url):
        results["backplane"] = url.split("://")[0]
        with nodes(("solo", "memory"), ("a", url), ("b", url)) as (solo, a, b):
            # Interleaved rounds, so a burst of load from elsewhere hits every scenario alike.
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
        with nodes(("a", url), ("b", url)) as (a, b):
            results["throughput_cross_node"] = await throughput(
                a.url("p"), b.url("s"), args.flood, 4, 64, a.process.pid, b.process.pid)
            results["intake_one_node"] = await intake(
                redis_port, b.url("s"), args.flood, b.process.pid)
        with nodes(("solo2", "memory")) as (solo,):
            results["throughput_memory_one_node"] = await throughput(
                solo.url("p"), solo.url("s"), args.flood, 4, 64, solo.process.pid,
                solo.process.pid)
        results["coredis_reader_alone"] = await coredis_reader(redis_port, args.flood)
    results["load_after"] = os.getloadavg()[0]
    return results


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="per latency run")
    parser.add_argument("--rate", type=float, default=500.0, help="publishes/s in latency runs")
    parser.add_argument("--flood", type=int, default=20000, help="messages per rate run")
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds (median)")
    parser.add_argument("--sentinel", action="store_true",
                        help="nodes on redis+sentinel:// (master, replica, three sentinels)")
    args = parser.parse_args()
    results = trio.run(main, args)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    cli()
