"""Real Redis topologies for tests: a master, a replica and three sentinels on free ports
(killed by PID), and a redis-server that keeps an RDB snapshot across restarts."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.support import WAIT, TcpProxy, free_port

START = 10.0  # seconds a server may take to answer PING on a busy machine
MASTER = "mymaster"


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `bash scripts/setup.sh --test`")
    return binary


def command(port: int, *args: str) -> bytes:
    """One inline command to 127.0.0.1:port; the raw reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(" ".join(args).encode() + b"\r\n")
        return s.recv(65536)


class Process:
    """A redis-server (or sentinel) child process on 127.0.0.1:`port`."""

    def __init__(self, port: int, args: list[str]) -> None:
        self.port = port
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([_binary(), *self.args],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START
        while not self.ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server {self.args} exited with "
                                   f"{self.process.returncode} (is port {self.port} taken?)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer PING within {START} s")
            time.sleep(0.02)

    def ping(self) -> bool:
        try:
            return command(self.port, "PING").startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL by PID, and reap it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=WAIT)
        self.process = None


def server(port: int, *extra: str) -> Process:
    return Process(port, ["--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "no",
                          "--save", "", "--appendonly", "no", *extra])


class SentinelSet:
    """A master, one replica and three sentinels (quorum 2) on free ports. With `lossy`,
    the replica replicates through a TcpProxy that a test can `hold()`: the master then
    acknowledges writes that the replica never gets."""

    def __init__(self, directory: Path, down_after_ms: int = 500, lossy: bool = False
                 ) -> None:
        # Replication writes an RDB file even with --save "": keep it in the test's folder.
        self.master = server(free_port(), "--dir", str(directory))
        self.proxy = TcpProxy(self.master.port) if lossy else None
        upstream = self.proxy.port if self.proxy is not None else self.master.port
        self.replica = server(free_port(), "--dir", str(directory), "--replicaof", "127.0.0.1",
                              str(upstream))
        self.sentinels: list[Process] = []
        for i in range(3):
            port = free_port()
            conf = directory / f"sentinel{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {directory}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {down_after_ms}\n"
                f"sentinel failover-timeout {MASTER} 10000\n")
            self.sentinels.append(Process(port, [str(conf), "--sentinel"]))

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER}/0"

    def start(self) -> None:
        """Start everything; return once the replica is in sync and every sentinel knows
        the replica and the other two sentinels (a failover can happen)."""
        self.master.start()
        self.replica.start()
        self._until(lambda: b"master_link_status:up" in command(self.replica.port, "INFO",
                                                                 "replication"))
        for s in self.sentinels:
            s.start()
        for s in self.sentinels:
            self._until(lambda s=s: b"3 usable" in command(s.port, "SENTINEL", "ckquorum",
                                                           MASTER))
            self._until(lambda s=s: b"ip" in command(s.port, "SENTINEL", "replicas", MASTER))

    def master_port(self) -> int:
        """The master's port, as the first sentinel says."""
        reply = command(self.sentinels[0].port, "SENTINEL", "get-master-addr-by-name", MASTER)
        return int(reply.split(b"\r\n")[4])

    def kill(self) -> None:
        for p in [*self.sentinels, self.replica, self.master]:
            p.kill()
        if self.proxy is not None:
            self.proxy.close()

    @staticmethod
    def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis topology did not settle in time")
            time.sleep(0.05)
