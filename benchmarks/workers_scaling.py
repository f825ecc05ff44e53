"""What `roomcast serve --workers 2` gains over one worker on this machine.

    .venv/bin/python -m benchmarks.workers_scaling [--seconds 5] [--subscribers 200]

Starts its own redis-server and, in turn, `roomcast serve --workers 1` and `--workers 2` on
one port (127.0.0.1), and measures for each:

- connections/s: clients (raw sockets, 32 at a time) open a WebSocket, wait for the
  `connected` frame and close, for `--seconds`;
- deliveries/s: `--subscribers` WebSocket subscribers in one room; messages SPUBLISHed
  straight into the room's Redis channel (as the publish script would), counted at the
  subscribers: every worker with subscribers reads each message and writes it to its own;
- the CPU seconds the workers, Redis and this client spent (all share the machine's cores).

Every process is ours and is killed by PID at the end; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import trio

from benchmarks.cluster_latency import SECRET, cpu_seconds, free_port, redis_server, token

CONNECTED = b'"type":"connected"'
MESSAGE = b'"type":"message"'


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_workers(n: int, port: int, redis_url: str) -> tuple[subprocess.Popen[bytes], Any,
                                                                list[int]]:
    """`roomcast serve --workers n`; returns the parent, its log file and the worker pids."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - a file, not a pipe nobody reads
    command = [sys.executable, "-m", "roomcast", "serve", "--jwt-secret", SECRET, "--port",
               str(port), "--http-port", "0", "--node", "bench", "--workers", str(n),
               "--backplane", redis_url, "--rate-per-second", "1000000", "--rate-burst",
               "1000000", "--max-pending", "100000", "--max-connections-per-user", "100000",
               "--max-handshakes", "1024"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    parent = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=log, env=env)
    deadline = time.monotonic() + 30
    while True:
        log.seek(0)
        text = log.read()
        if text.count(b" listening ") >= n:
            pids = [int(p) for p in re.findall(rb"worker started .*?pid=(\d+)", text)]
            return parent, log, pids or [parent.pid]
        if parent.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"roomcast serve --workers {n} did not start:\n{text[-2000:]!r}")
        time.sleep(0.05)


def upgrade(port: int, sub: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /ws?token={token(sub)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def text_frame(data: bytes) -> bytes:
    """A masked client text frame (mask 0: the payload goes as it is)."""
    n = len(data)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE, n >> 8, n & 0xFF])
    return head + b"\0\0\0\0" + data


async def open_ws(port: int, sub: str) -> tuple[trio.SocketStream, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(upgrade(port, sub))
    seen = b""
    while CONNECTED not in seen:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise RuntimeError(f"closed during the handshake: {seen[-300:]!r}")
        seen += chunk
    return stream, seen


async def connections_per_second(port: int, seconds: float) -> float:
    done = 0
    deadline = trio.current_time() + seconds

    async def client(k: int) -> None:
        nonlocal done
        while trio.current_time() < deadline:
            stream, _ = await open_ws(port, f"c{k}")
            await stream.aclose()
            done += 1

    async with trio.open_nursery() as nursery:
        for k in range(32):
            nursery.start_soon(client, k)
    return done / seconds


async def deliveries_per_second(port: int, redis_port: int, subscribers: int,
                                messages: int) -> float:
    room = f"fan-{time.monotonic_ns()}"
    streams = []
    epoch = b""
    for k in range(subscribers):
        stream, _ = await open_ws(port, f"s{k}")
        await stream.send_all(text_frame(json.dumps(
            {"type": "subscribe", "id": "s", "rooms": [room]}).encode()))
        seen = b""
        while b'"subscribed"' not in seen:
            seen += await stream.receive_some(65536)
        found = re.search(rb'"epoch":"([^"]+)"', seen)
        assert found is not None, seen[-300:]
        epoch = found[1]
        streams.append(stream)
    total = subscribers * messages
    counted = 0
    finished = trio.Event()

    async def read(stream: trio.SocketStream) -> None:
        nonlocal counted
        tail = b""
        while True:
            chunk = await stream.receive_some(1 << 20)
            data = tail + chunk
            counted += data.count(MESSAGE)
            tail = data[-(len(MESSAGE) - 1):]
            if counted >= total:
                finished.set()

    channel = f"rc:{{{room}}}:c".encode()  # the room's shard channel
    commands = []
    for offset in range(1, messages + 1):
        payload = (b'{"type":"message","room":"%s","offset":%d,"event":null,"data":{"n":%d},'
                   b'"sender":null,"ts":"2026-01-01T00:00:00.000Z"}'
                   % (room.encode(), offset, offset))
        body = b"m%d %s null\n%s" % (offset, epoch, payload)
        commands.append(b"*3\r\n$8\r\nSPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                        % (len(channel), channel, len(body), body))
    redis = await trio.open_tcp_stream("127.0.0.1", redis_port)
    async with redis, trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(read, stream)

        async def discard() -> None:
            while await redis.receive_some(65536):
                pass

        nursery.start_soon(discard)
        start = time.perf_counter()
        for i in range(0, messages, 100):
            await redis.send_all(b"".join(commands[i:i + 100]))
        with trio.fail_after(120):
            await finished.wait()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    for stream in streams:
        await stream.aclose()
    return total / elapsed


async def measure(workers: int, redis_port: int, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    parent, log, pids = start_workers(workers, port, f"redis://127.0.0.1:{redis_port}/0")
    try:
        await trio.sleep(0.5)  # the workers' backplanes connect
        cpu0 = [cpu_seconds(p) for p in pids], own_cpu()
        conns = await connections_per_second(port, args.seconds)
        cpu1 = [cpu_seconds(p) for p in pids], own_cpu()
        deliveries = await deliveries_per_second(port, redis_port, args.subscribers,
                                                 args.messages)
        cpu2 = [cpu_seconds(p) for p in pids], own_cpu()
    finally:
        os.kill(parent.pid, signal.SIGTERM)
        parent.wait(timeout=60)
        log.close()
    return {
        "workers": workers,
        "connections_per_s": round(conns),
        "deliveries_per_s": round(deliveries),
        "worker_cpu_s_connections": [round(b - a, 2) for a, b in zip(cpu0[0], cpu1[0],
                                                                      strict=True)],
        "worker_cpu_s_deliveries": [round(b - a, 2) for a, b in zip(cpu1[0], cpu2[0],
                                                                     strict=True)],
        "client_cpu_s": [round(cpu1[1] - cpu0[1], 2), round(cpu2[1] - cpu1[1], 2)],
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"cores": os.cpu_count(), "load_before": os.getloadavg()[0]}
    with redis_server() as redis_port:
        for round_ in range(args.rounds):
            for workers in (1, 2):
                results[f"round{round_}_workers{workers}"] = await measure(
                    workers, redis_port, args)
    results["load_after"] = os.getloadavg()[0]
    return results


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="connection churn time")
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=2000, help="per delivery run")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds")
    args = parser.parse_args()
    print(json.dumps(trio.run(main, args), indent=2))


if __name__ == "__main__":
    cli()
