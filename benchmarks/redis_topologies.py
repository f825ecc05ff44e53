"""The Redis the benchmarks run on: one redis-server, Sentinel, or a Redis Cluster.

Every process is started here on free ports on 127.0.0.1, without persistence, and killed
by PID on the way out; a `Topology` names the backplane URL and each process's PID by role,
so a benchmark can read the CPU time Redis spent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from benchmarks.servers import free_port

KINDS = ("single", "sentinel", "cluster")
CLUSTER_BUS_OFFSET = 10000  # Redis Cluster's bus listens on port + 10000


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: set[int]) -> int:
    """A free port P whose cluster-bus port P + 10000 is free too."""
    for _ in range(200):
        port = free_port()
        if (port + CLUSTER_BUS_OFFSET <= 65535 and port not in taken
                and port + CLUSTER_BUS_OFFSET not in taken
                and _bindable(port + CLUSTER_BUS_OFFSET)):
            return port
    raise RuntimeError("found no free port P with P + 10000 free; free some ports and retry")


def _binary(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        sys.exit(f"{name} is not installed: run `bash scripts/setup.sh --test`")
    return binary


@contextmanager
def redis_process(*extra: str, port: int = 0, config: str | None = None
                  ) -> Iterator[tuple[int, int]]:
    """A redis-server (a sentinel with `config`) on a free port: yields (port, PID); killed
    by PID at the end. Its working directory is a temporary one (a replica writes the RDB
    it syncs from there)."""
    binary = _binary("redis-server")
    port = port or free_port()
    args = ([config, "--sentinel"] if config else
            ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             *extra])
    with tempfile.TemporaryDirectory() as tmp, _killed(subprocess.Popen(
            [binary, *args], cwd=tmp, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)) as process:
        _wait_for_pong(process, port)
        yield port, process.pid


@contextmanager
def _killed(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """`process`, killed by PID (SIGKILL) on the way out."""
    try:
        yield process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()


def _wait_for_pong(process: subprocess.Popen[bytes], port: int) -> None:
    """Until the server on `port` answers PING (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited at start "
                               f"(status {process.returncode}): is the port taken?")
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server on port {port} did not answer PING in 10 s")
        time.sleep(0.02)


@contextmanager
def redis_server(*extra: str, port: int = 0, config: str | None = None) -> Iterator[int]:
    """A redis-server (a sentinel with `config`) on a free port, killed by PID at the end."""
    with redis_process(*extra, port=port, config=config) as (started, _pid):
        yield started


def ask(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(command + b"\r\n")
        return s.recv(65536)


def command_stats(ports: list[int]) -> dict[str, dict[str, float]]:
    """INFO commandstats summed over `ports`: calls and microseconds per call by command
    (the time Redis spent running it, not reading and answering it)."""
    calls: dict[str, float] = {}
    usec: dict[str, float] = {}
    for port in ports:
        for line in ask(port, b"INFO commandstats").decode(errors="replace").splitlines():
            if not line.startswith("cmdstat_"):
                continue
            name, _, fields = line[8:].partition(":")
            values = dict(kv.split("=", 1) for kv in fields.split(","))
            calls[name] = calls.get(name, 0) + int(values["calls"])
            usec[name] = usec.get(name, 0) + int(values["usec"])
    return {name: {"calls": calls[name], "usec_per_call": round(usec[name] / calls[name], 2)}
            for name in sorted(calls, key=lambda n: -usec[n]) if calls[name]}


def primary_for(topology: Topology, key: bytes) -> int:
    """The port of the primary that owns `key`'s hash slot (the only one, outside a
    Cluster)."""
    if topology.kind != "cluster":
        return topology.port
    slot = int(ask(topology.port, b"CLUSTER KEYSLOT " + key).strip(b":\r\n"))
    for port in topology.ports["primary"]:
        nodes = ask(port, b"CLUSTER NODES").decode(errors="replace")
        mine = next(line for line in nodes.splitlines() if "myself" in line)
        for part in mine.split()[8:]:
            first, _, last = part.partition("-")
            if first.isdigit() and int(first) <= slot <= int(last or first):
                return port
    raise RuntimeError(f"no primary owns slot {slot}: is the cluster up (CLUSTER INFO)?")


@dataclass
class Topology:
    """What a benchmark needs of the Redis it started: the URL, a primary's port (for
    commands sent straight to Redis), and the PIDs and ports per role."""

    kind: str
    url: str
    port: int
    pids: dict[str, list[int]] = field(default_factory=dict)
    ports: dict[str, list[int]] = field(default_factory=dict)


def _wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:.0f} s")
        time.sleep(0.05)



@contextmanager
def single_topology() -> Iterator[Topology]:
    """One redis-server."""
    with redis_process() as (port, pid):
        yield Topology("single", f"redis://127.0.0.1:{port}/0", port, {"primary": [pid]},
                       {"primary": [port]})


@contextmanager
def sentinel_topology() -> Iterator[Topology]:
    """A master, a replica and three sentinels; the URL names the sentinels."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        master, master_pid = stack.enter_context(redis_process())
        replica, replica_pid = stack.enter_context(
            redis_process("--replicaof", "127.0.0.1", str(master)))
        _wait_for("the replica did not sync with the master",
                  lambda: b"master_link_status:up" in ask(replica, b"INFO replication"), 30)
        ports, pids = [], []
        for i in range(3):
            port = free_port()
            conf = f"{tmp}/sentinel{i}.conf"
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind 127.0.0.1\ndir {tmp}\n"
                        f"sentinel monitor m 127.0.0.1 {master} 2\n"
                        "sentinel down-after-milliseconds m 1000\n")
            port, pid = stack.enter_context(redis_process(port=port, config=conf))
            ports.append(port)
            pids.append(pid)
        _wait_for("the sentinels did not find each other",
                  lambda: all(b"3 usable" in ask(p, b"SENTINEL ckquorum m") for p in ports), 30)
        hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
        yield Topology("sentinel", f"redis+sentinel://{hosts}/m/0", master,
                       {"primary": [master_pid], "replica": [replica_pid], "sentinel": pids},
                       {"primary": [master], "replica": [replica], "sentinel": ports})


@contextmanager
def cluster_topology(primaries: int = 3, replicas: int = 1) -> Iterator[Topology]:
    """A Redis Cluster of `primaries` primaries with `replicas` replicas each, created with
    `redis-cli --cluster create`; yields once CLUSTER INFO says ok on every node."""
    cli = _binary("redis-cli")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        taken: set[int] = set()
        started: list[tuple[int, int]] = []
        for _ in range(primaries * (1 + replicas)):
            port = free_cluster_port(taken)
            taken |= {port, port + CLUSTER_BUS_OFFSET}
            started.append(stack.enter_context(redis_process(
                "--cluster-enabled", "yes", "--cluster-config-file", f"{tmp}/nodes-{port}.conf",
                "--cluster-node-timeout", "1000", "--dir", tmp, port=port)))
        create = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p, _ in started),
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
        if create.returncode != 0:
            tail = (create.stdout + create.stderr).decode(errors="replace")[-800:]
            raise RuntimeError(f"redis-cli --cluster create failed:\n{tail}")
        _wait_for("the cluster did not reach cluster_state:ok on every node",
                  lambda: all(b"cluster_state:ok" in ask(p, b"CLUSTER INFO")
                              for p, _ in started), 30)
        roles: dict[str, list[int]] = {"primary": [], "replica": []}
        ports: dict[str, list[int]] = {"primary": [], "replica": []}
        for port, pid in started:
            role = "primary" if b"master" in ask(port, b"ROLE")[:32] else "replica"
            roles[role].append(pid)
            ports[role].append(port)
        _wait_for("the cluster's replicas did not sync with their primaries",
                  lambda: all(b"master_link_status:up" in ask(p, b"INFO replication")
                              for p in ports["replica"]), 30)
        hosts = ",".join(f"127.0.0.1:{p}" for p in ports["primary"])
        yield Topology("cluster", f"redis+cluster://{hosts}", ports["primary"][0], roles,
                       ports)


@contextmanager
def redis_topology(kind: str) -> Iterator[Topology]:
    """One of KINDS, started here and killed at the end."""
    starters = {"single": single_topology, "sentinel": sentinel_topology,
                "cluster": cluster_topology}
    with starters[kind]() as topology:
        yield topology
