"""A real Redis Cluster for tests: primaries with replicas on free ports (each with its bus
port free too), created with `redis-cli --cluster create` and killed by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tests.support import WAIT, free_port

START = 10.0  # seconds a server may take to answer PING on a busy machine
SETTLE = 60.0  # seconds a new cluster may take to agree on its slot map on a busy machine
CREATE = 60.0  # seconds `redis-cli --cluster create` may take
SLOTS = 16384
BUS = 10000  # a node's cluster bus listens on its port + 10000


def _binary(name: str, package: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        raise RuntimeError(f"{name} is not installed (Debian package {package}): "
                           "run `bash scripts/setup.sh --test`")
    return binary


def _encode(args: tuple[str, ...]) -> bytes:
    """A command as a RESP array (any argument, spaces and all, goes through as is)."""
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Reader:
    """Reads exactly one RESP2 reply from a socket, parsed and raw."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.pos = 0

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis-server closed the connection mid-reply")
        self.buffer += chunk

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n", self.pos)) < 0:
            self._fill()
        line = bytes(self.buffer[self.pos:end])
        self.pos = end + 2
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < self.pos + n + 2:
            self._fill()
        data = bytes(self.buffer[self.pos:self.pos + n])
        self.pos += n + 2
        return data

    def reply(self) -> Any:
        """bytes for simple and bulk strings, int, None, list, or RedisError for -ERR."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            return None if int(rest) < 0 else self._exactly(int(rest))
        if kind == b"*":
            return None if int(rest) < 0 else [self.reply() for _ in range(int(rest))]
        raise ValueError(f"not a RESP2 reply: {line[:80]!r}")


class RedisError(Exception):
    """An error reply (-MOVED, -ERR...) from a node, as returned by `call`."""


def _exchange(port: int, args: tuple[str, ...]) -> tuple[Any, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(_encode(args))
        reader = _Reader(s)
        value = reader.reply()
        return value, bytes(reader.buffer[:reader.pos])


def command(port: int, *args: str) -> bytes:
    """One command to 127.0.0.1:port; the whole raw reply (e.g. b"-MOVED 866 ...\\r\\n")."""
    return _exchange(port, args)[1]


def call(port: int, *args: str) -> Any:
    """One command to 127.0.0.1:port; the parsed reply (an error reply comes back as a
    RedisError value, not raised, so a test can look at -MOVED)."""
    return _exchange(port, args)[0]


def ping(port: int) -> bool:
    """Whether a redis-server answers PING on 127.0.0.1:`port` now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _info(port: int, *section: str) -> dict[str, str]:
    text = call(port, "INFO", *section) if section else call(port, "CLUSTER", "INFO")
    fields = {}
    for line in text.decode().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value
    return fields


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition no event signals (the cluster settling), under a time-out."""
    deadline = time.monotonic() + timeout
    while True:
        with suppress(OSError, ValueError, TypeError, AttributeError, KeyError, IndexError):
            if check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Redis Cluster did not settle within {timeout} s: {what} "
                               "(a busy machine? see the nodes' logs in the test's folder)")
        time.sleep(0.05)


class Node:
    """One cluster-enabled redis-server child process on 127.0.0.1:`port`."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        d = self.directory
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "no",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(d / f"nodes-{self.port}.conf"),
                "--cluster-node-timeout", "1000",
                # A replica may always be promoted, however long its link was down.
                "--cluster-replica-validity-factor", "0",
                # Replicas sync at once (7.0 waits 5 s for more replicas by default).
                "--repl-diskless-sync-delay", "0",
                # CLUSTER SLOTS lists a replica only once its replication offset is past 0,
                # which on an idle primary takes a ping to its replicas (every 10 s by default).
                "--repl-ping-replica-period", "1",
                "--save", "", "--appendonly", "no", "--dir", str(d),
                "--logfile", str(d / f"redis-{self.port}.log")]
        self.process = subprocess.Popen([_binary("redis-server", "redis-server"), *args],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)

    def ping(self) -> bool:
        return ping(self.port)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL by PID, and reap it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=WAIT)
        self.process = None


def _slot_map(port: int) -> list[tuple[int, int, int, tuple[int, ...]]]:
    """CLUSTER SLOTS as sorted (first, last, primary port, sorted replica ports)."""
    ranges = []
    for entry in call(port, "CLUSTER", "SLOTS"):
        first, last, primary, *replicas = entry
        ranges.append((first, last, primary[1],
                       tuple(sorted(r[1] for r in replicas))))
    return sorted(ranges)


class RedisCluster:
    """`primaries` primaries with `replicas` replicas each, on free ports in `directory`
    (node configs, logs). Call `start()`, and `kill_all()` at the end."""

    def __init__(self, directory: Path, primaries: int = 3, replicas: int = 1) -> None:
        if primaries < 3:
            raise ValueError("a Redis Cluster needs at least 3 primaries")
        self.directory = directory
        self.primary_count = primaries
        self.replica_count = replicas
        self.nodes: list[Node] = []  # every process, in the order given to redis-cli
        self.started_primaries: list[int] = []  # the primaries' ports right after creation
        self._lost: dict[int, list[tuple[int, int]]] = {}  # killed port -> slots it owned

    # -- starting -------------------------------------------------------------------------

    def _pick_port(self, taken: set[int]) -> int:
        """A free port whose bus port (+10000) is free too, clashing with no other node's."""
        for _ in range(200):
            port = free_port()
            bus = port + BUS
            if (bus <= 65535 and not {port, bus} & taken and _port_is_free(bus)):
                taken.update((port, bus))
                return port
        raise RuntimeError("found no free port P with P+10000 free too: free some ports")

    def _start_nodes(self) -> None:
        taken: set[int] = set()
        pending = [Node(self._pick_port(taken), self.directory)
                   for _ in range(self.primary_count * (1 + self.replica_count))]
        for _attempt in range(5):
            self.nodes.extend(pending)  # listed before spawning, so kill_all finds them all
            for node in pending:
                node.spawn()
            deadline = time.monotonic() + START
            retry = []
            for node in pending:
                while True:
                    if not node.alive:  # most likely its port or bus port was taken meanwhile
                        node.kill()
                        self.nodes.remove(node)
                        retry.append(Node(self._pick_port(taken), self.directory))
                        break
                    if node.ping():
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on port {node.port} did not answer "
                                           f"PING within {START} s (a busy machine?)")
                    time.sleep(0.02)
            if not retry:
                return
            pending = retry
        raise RuntimeError("cluster redis-servers kept exiting at start: see the "
                           f"redis-*.log files in {self.directory}")

    def start(self) -> None:
        """Start the nodes, create the cluster, and return once every node says
        cluster_state:ok with all 16384 slots assigned, every node reports the same slot map
        (so a client starting now sees a stable one) and every replica's link is up."""
        try:
            self._start_nodes()
            self._create()
            self._settle()
        except BaseException:
            self.kill_all()
            raise
        self.started_primaries = self.primaries()

    def _create(self) -> None:
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        try:
            done = subprocess.run(
                [_binary("redis-cli", "redis-tools"), "--cluster", "create", *addresses,
                 "--cluster-replicas", str(self.replica_count), "--cluster-yes"],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=CREATE)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"redis-cli --cluster create took more than {CREATE} s "
                               "(a busy machine?)") from exc
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
            raise RuntimeError(f"redis-cli --cluster create failed ({done.returncode}):\n{out}")

    def _settle(self) -> None:
        ports = [n.port for n in self.nodes]
        everyone = set(ports)

        def ok(port: int) -> bool:
            info = _info(port)
            return (info["cluster_state"] == "ok"
                    and info["cluster_slots_assigned"] == str(SLOTS)
                    and info["cluster_known_nodes"] == str(len(ports)))

        _until(lambda: all(ok(p) for p in ports), SETTLE, "cluster_state:ok on every node")

        def agreed() -> bool:
            maps = [_slot_map(p) for p in ports]
            if any(m != maps[0] for m in maps):
                return False
            shown = {m[2] for m in maps[0]} | {r for m in maps[0] for r in m[3]}
            expected = self.primary_count * self.replica_count
            replicas = sum(len(m[3]) for m in maps[0])
            return (shown == everyone and replicas >= expected
                    and sum(last - first + 1 for first, last, *_ in maps[0]) == SLOTS)

        _until(agreed, SETTLE, "the same CLUSTER SLOTS on every node, with every replica")

        def linked() -> bool:
            for port in ports:
                info = _info(port, "replication")
                if info["role"] == "slave" and info["master_link_status"] != "up":
                    return False
            return True

        _until(linked, SETTLE, "master_link_status:up on every replica")

    # -- looking ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """redis+cluster://host:port,... of the primaries as started."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.started_primaries)
        return f"redis+cluster://{hosts}"

    def live(self) -> list[int]:
        """Ports of the nodes whose process runs and answers PING."""
        return [n.port for n in self.nodes if n.alive and n.ping()]

    def _any(self) -> int:
        ports = self.live()
        if not ports:
            raise RuntimeError("no cluster node is running: was the cluster started?")
        return ports[0]

    def primaries(self) -> list[int]:
        """Ports of the primaries now (not failed, owning slots), as a live node sees it."""
        ports = []
        for line in call(self._any(), "CLUSTER", "NODES").decode().splitlines():
            fields = line.split()
            address, flags, slots = fields[1], fields[2].split(","), fields[8:]
            if "master" in flags and "fail" not in flags and slots:
                ports.append(int(address.split("@")[0].rsplit(":", 1)[1]))
        return sorted(ports)

    def slot_of(self, key: str) -> int:
        slot: int = call(self._any(), "CLUSTER", "KEYSLOT", key)
        return slot

    def primary_for(self, key: str) -> int:
        """The port of the primary owning `key`'s slot now, as a live node sees it."""
        port = self._any()
        slot: int = call(port, "CLUSTER", "KEYSLOT", key)
        for first, last, primary, _ in _slot_map(port):
            if first <= slot <= last:
                return primary
        raise RuntimeError(f"no node owns slot {slot} now (the cluster is down?)")

    def command(self, port: int, *args: str) -> bytes:
        """One command to the node on `port`; the whole raw reply."""
        return command(port, *args)

    # -- breaking and cleaning ----------------------------------------------------------------

    def kill(self, port: int) -> None:
        """SIGKILL the node on `port` by PID and reap it (its slots are noted for
        `wait_failover`)."""
        node = next((n for n in self.nodes if n.port == port), None)
        if node is None:
            raise ValueError(f"port {port} is not a node of this cluster: {self!r}")
        others = [p for p in self.live() if p != port]
        if others and node.alive:
            self._lost[port] = [(first, last) for first, last, primary, _
                                in _slot_map(others[0]) if primary == port]
        node.kill()

    def wait_failover(self, dead_port: int, timeout: float = 30.0) -> None:
        """Return once every live node says cluster_state:ok and gives the slots the killed
        node owned to a live primary."""
        lost = self._lost.get(dead_port, [])

        def over() -> bool:
            live = self.live()
            for port in live:
                if _info(port)["cluster_state"] != "ok":
                    return False
                owners = _slot_map(port)
                for first, last in lost:
                    if not any(a <= first and last <= b and owner in live and owner != dead_port
                               for a, b, owner, _ in owners):
                        return False
            return bool(live)

        _until(over, timeout, f"no live node took over the slots of port {dead_port}")

    def flushall(self) -> None:
        """FLUSHALL on every live primary (a cluster shared between tests starts empty)."""
        for port in self.primaries():
            reply = command(port, "FLUSHALL")
            if not reply.startswith(b"+OK"):
                raise RuntimeError(f"FLUSHALL on port {port} answered {reply!r}")

    def kill_all(self) -> None:
        """SIGKILL every process this cluster started."""
        for node in self.nodes:
            node.kill()

    def __repr__(self) -> str:
        return f"<RedisCluster {[n.port for n in self.nodes]}>"


@contextmanager
def running_cluster(directory: Path, primaries: int = 3, replicas: int = 1
                    ) -> Iterator[RedisCluster]:
    """A started RedisCluster for the length of the block; every node killed at the end."""
    cluster = RedisCluster(directory, primaries, replicas)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.kill_all()
