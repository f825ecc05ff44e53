"""The servers under test, each in its own process: roomcast, the two peers and the floor.

Also what the harness reads about a process from /proc (CPU seconds, RSS), CPU pinning,
and the open-files limit that 19k connections need.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-0123456789-0123456789-abcdef"
TARGETS = ("roomcast", "websockets", "naive_trio", "floor", "fastapi", "http_floor",
           "trio_floor")
PEER_MODULES = {
    "websockets": "benchmarks.peers.websockets_broadcast",
    "naive_trio": "benchmarks.peers.naive_trio",
    "floor": "benchmarks.peers.raw_floor",  # one os.write per delivery: a lower bound
    "fastapi": "benchmarks.peers.fastapi_peer",  # the HTTP API scenarios' peer
    "http_floor": "benchmarks.peers.http_floor",  # and their floor
    "trio_floor": "benchmarks.peers.trio_floor",  # and that floor on Trio
}
PEERS = tuple(PEER_MODULES)
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

# Limits generous enough that the harness measures speed, not its own configuration.
ROOMCAST_DEFAULTS: dict[str, Any] = {
    "http_port": 0,
    "node": "bench",
    "max_connections_per_user": 100_000,
    "max_connections": 100_000,
    "rate_per_second": 1_000_000,
    "rate_burst": 1_000_000,
    "shutdown_grace": 0,
    "log_format": "text",
}


class ServerError(RuntimeError):
    """A server under test did not start or died; the message carries its log's tail."""


def raise_nofile() -> int:
    """Raise this process's open-files limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cores() -> tuple[int | None, list[int | None]]:
    """The server's core and the generator's cores: split when there are two or more."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, [None]
    return available[0], list(available[1:])


def pin(pid: int, core: int | None) -> None:
    if core is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {core})


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/statm."""
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class Server:
    """One server process on 127.0.0.1:`port`, pinned to `core`, its output in `log`."""

    def __init__(self, target: str, port: int, core: int | None, log: Path,
                 settings: dict[str, Any] | None = None, src: Path | None = None) -> None:
        self.target = target
        self.src = src  # import roomcast from here instead (to measure a patch)
        self.port = port
        self.core = core
        self.log = log
        self.settings = dict(ROOMCAST_DEFAULTS, **(settings or {}))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        if self.target == "roomcast":
            cmd = [sys.executable, "-m", "roomcast", "serve", "--jwt-secret", SECRET,
                   "--port", str(self.port)]
            for name, value in self.settings.items():
                cmd += [_flag(name), str(value)]
            return cmd
        if self.target in PEERS:
            return [sys.executable, "-m", PEER_MODULES[self.target], "--port", str(self.port)]
        raise ValueError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")

    def start(self, timeout: float = 20.0) -> None:
        """Start the process and return once it accepts connections."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        paths = [str(self.src)] if self.src and self.target == "roomcast" else []
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (*paths, str(REPO), env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=REPO, env=env)
        pin(self.proc.pid, self.core)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.target} exited with {self.proc.returncode} while "
                                  f"starting:\n{self.tail()}")
            if self._healthy():
                return
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"{self.target} did not accept connections within {timeout:.0f} s:"
                          f"\n{self.tail()}")

    def _healthy(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if self.target != "roomcast":
                    return True
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def count_in_log(self, needle: str) -> int:
        try:
            return self.log.read_text(errors="replace").count(needle)
        except OSError:
            return 0


class Profiler:
    """py-spy sampling a server process into a collapsed-stack file (flamegraph input)."""

    def __init__(self, proc: subprocess.Popen[bytes], path: Path) -> None:
        self.proc = proc
        self.path = path

    def stop(self) -> None:
        """End the recording (SIGINT makes py-spy write what it has) and wait for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def profiler(server: Server, seconds: float) -> Profiler | None:
    """Start py-spy on `server` for at most `seconds`, if py-spy is installed."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        print("--profile: py-spy is not installed (pip install py-spy); not profiling",
              file=sys.stderr)
        return None
    path = server.log.with_suffix(".profile.txt")
    proc = subprocess.Popen(
        [spy, "record", "--pid", str(server.pid), "--format", "raw", "--rate", "250",
         "--nonblocking", "--duration", str(max(1, int(seconds))), "-o", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    time.sleep(0.3)  # let it attach before the window opens
    return Profiler(proc, path)
