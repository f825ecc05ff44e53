"""The Redis topologies every cluster test runs on, and several roomcast nodes sharing one
(protocol §9).

A test that takes the `redis` fixture runs once per topology: `single`, a redis-server of
its own on a free port (so it can kill and restart it); `sentinel`, a master, a replica and
three sentinels; and `cluster`, a Redis Cluster of three primaries with a replica each. The
last two are shared by the session and emptied before each test. A test that kills,
pauses or inspects the one server is marked `single_redis` and runs on `single` only; the
Sentinel and Cluster failovers have tests of their own."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import pytest
import trio

from roomcast.router import Router
from tests.cluster.rediscluster import RedisCluster, ping, running_cluster
from tests.cluster.sentinels import SentinelSet
from tests.cluster.sentinels import command as sentinel_command
from tests.support import WAIT, ServerProcess, free_port, running_server

REDIS_START = 10.0  # seconds redis-server may take to answer PING on a busy machine


class RedisServer:
    """A redis-server child process without persistence, on 127.0.0.1:`port`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `bash scripts/setup.sh --test`")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + REDIS_START
        while not self.ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode} "
                                   f"(is port {self.port} taken?)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer PING within {REDIS_START} s")
            time.sleep(0.02)

    def ping(self) -> bool:
        return ping(self.port)

    def command(self, *args: str) -> bytes:
        """Send one command (inline form) and return the raw reply, for test set-ups."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=WAIT) as s:
            s.sendall(" ".join(args).encode() + b"\r\n")
            return s.recv(65536)

    def kill(self) -> None:
        """SIGKILL the server (by its PID) and wait for it to be gone."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)  # works on a stopped process too
            self.process.wait(timeout=WAIT)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets open but answers nothing."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def restart(self) -> None:
        """Kill it and start an empty one on the same port."""
        self.kill()
        self.start()




TOPOLOGIES = ("single", "sentinel", "cluster")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes `redis` on each topology (`single_redis` ones on one)."""
    if "redis" in metafunc.fixturenames:
        single = metafunc.definition.get_closest_marker("single_redis") is not None
        metafunc.parametrize("redis", ("single",) if single else TOPOLOGIES, indirect=True)


class SharedTopology:
    """The session's Sentinel set or Redis Cluster, seen by a test through `url`."""

    def __init__(self, url: str) -> None:
        self.url = url


@pytest.fixture(scope="session")
def shared_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with running_cluster(tmp_path_factory.mktemp("redis-cluster")) as topology:
        yield topology


@pytest.fixture(scope="session")
def shared_sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    topology = SentinelSet(tmp_path_factory.mktemp("redis-sentinel"))
    try:
        topology.start()
        yield topology
    finally:
        topology.kill()


@pytest.fixture
def redis(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The test's Redis: a redis-server of its own, or the session's Sentinel set or
    Cluster, emptied."""
    kind = getattr(request, "param", "single")
    if kind == "cluster":
        shared: RedisCluster = request.getfixturevalue("shared_redis_cluster")
        shared.flushall()
        yield SharedTopology(shared.url)
        return
    if kind == "sentinel":
        sentinels: SentinelSet = request.getfixturevalue("shared_sentinels")
        reply = sentinel_command(sentinels.master_port(), "FLUSHALL")
        assert reply.startswith(b"+OK"), reply
        yield SharedTopology(sentinels.url)
        return
    with own_redis() as server:
        yield server


@contextmanager
def own_redis() -> Iterator[RedisServer]:
    """A redis-server on a free port, killed by its PID at the end."""
    server = RedisServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


@asynccontextmanager
async def cluster(redis: RedisServer, *names: str, http: bool = False, wait_ready: bool = True,
                  **overrides: Any) -> AsyncIterator[list[Router]]:
    """In-process roomcast nodes named `names`, all on `redis`, ready when yielded (unless
    not `wait_ready`), each with its own HTTP port when `http`."""
    async with AsyncExitStack() as stack:
        routers = []
        for name in names:
            if http:
                overrides["http_port"] = free_port()
            router = await stack.enter_async_context(
                running_server(backplane=redis.url, node=name, **overrides))
            routers.append(router)
        if wait_ready:
            await wait_until(lambda: all(r.ready for r in routers))
        yield routers


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll a condition that no event signals (e.g. a node's readiness), under a time-out."""
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - nothing signals these conditions
            await trio.sleep(0.01)


@asynccontextmanager
async def node_process(redis: RedisServer, name: str, *args: str) -> AsyncIterator[ServerProcess]:
    """A `roomcast serve` child process on `redis`, killed (by PID) at the end."""
    server = ServerProcess("--backplane", redis.url, "--node", name, *args)
    await trio.to_thread.run_sync(server.start)
    try:
        yield server
    finally:
        await trio.to_thread.run_sync(server.kill)
