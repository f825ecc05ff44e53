"""`roomcast serve --workers 2` on a real redis-server: both workers serve one port
(SO_REUSEPORT), a worker killed with SIGKILL is restarted, and SIGTERM to the parent
drains every worker and exits 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import trio
import trio_websocket

from tests.cluster.conftest import RedisServer, wait_until
from tests.support import WAIT, ServerProcess, make_token

STARTED = re.compile(r"worker started worker=(\d+) node=\S+ pid=(\d+)")


def workers(server: ServerProcess) -> dict[int, int]:
    """Worker index -> pid of its latest start, from the parent's log."""
    found: dict[int, int] = {}
    for line in list(server.lines):
        match = STARTED.search(line)
        if match:
            found[int(match[1])] = int(match[2])
    return found


def listening(server: ServerProcess) -> int:
    return sum(" listening " in f" {line} " for line in list(server.lines))


async def node_of_a_new_connection(server: ServerProcess, token: str) -> str:
    async with trio_websocket.open_websocket_url(
            server.ws_url(token), connect_timeout=WAIT, disconnect_timeout=WAIT) as ws:
        with trio.fail_after(WAIT):
            frame = await ws.get_message()
    assert '"connected"' in frame, frame
    node = re.search(r'"node":"([^"]+)"', str(frame).replace(" ", ""))
    assert node is not None, frame
    return node[1]


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_two_workers_share_a_port_are_restarted_and_drain(redis: RedisServer) -> None:
    server = ServerProcess("--backplane", redis.url, "--workers", "2", "--http-port", "0",
                           "--shutdown-grace", "0.5")
    await trio.to_thread.run_sync(server.start)
    try:
        await wait_until(lambda: listening(server) >= 2 and len(workers(server)) == 2)
        token = make_token("w", rooms=["*"], publish=["*"])
        seen: set[str] = set()
        with trio.fail_after(WAIT):
            while len(seen) < 2:
                seen.add(await node_of_a_new_connection(server, token))
        assert seen == {"proc0-w1", "proc0-w2"}

        first = workers(server)[1]
        os.kill(first, signal.SIGKILL)
        await wait_until(lambda: workers(server)[1] != first and listening(server) >= 3)
        assert await node_of_a_new_connection(server, token) in seen

        pids = list(workers(server).values())
        server.process.send_signal(signal.SIGTERM)
        code = await trio.to_thread.run_sync(lambda: server.process.wait(timeout=WAIT))
        assert code == 0, server.lines[-10:]
        assert not any(alive(pid) for pid in pids)
        assert any("workers stopped" in line and "failed=none" in line
                   for line in server.lines), server.lines[-10:]
    finally:
        await trio.to_thread.run_sync(server.kill)


async def test_workers_of_a_killed_parent_drain_and_exit(redis: RedisServer) -> None:
    server = ServerProcess("--backplane", redis.url, "--workers", "2", "--http-port", "0",
                           "--shutdown-grace", "0")
    await trio.to_thread.run_sync(server.start)
    try:
        await wait_until(lambda: listening(server) >= 2 and len(workers(server)) == 2)
        pids = list(workers(server).values())
    finally:
        await trio.to_thread.run_sync(server.kill)  # SIGKILL to the parent only
    await wait_until(lambda: not any(alive(pid) for pid in pids))


def test_more_than_one_worker_without_redis_is_refused_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "roomcast", "serve", "--jwt-secret", "x" * 32, "--workers", "2"],
        capture_output=True, text=True, timeout=WAIT, check=False)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "needs a shared backplane" in result.stderr


async def test_two_workers_share_the_http_port_too_and_both_show_in_stats(
        redis: RedisServer) -> None:
    server = ServerProcess("--backplane", redis.url, "--workers", "2", "--presence-ttl", "3",
                           "--shutdown-grace", "0.5")
    await trio.to_thread.run_sync(server.start)
    try:
        await wait_until(lambda: listening(server) >= 2 and len(workers(server)) == 2)

        def both_in_stats() -> bool:
            status, stats = server.api("GET", "/api/stats")
            return status == 200 and set((stats.get("cluster") or {}).get(
                "node_names", [])) >= {"proc0-w1", "proc0-w2"}

        await wait_until(both_in_stats, timeout=15)
        assert len(workers(server)) == 2 and listening(server) == 2  # nobody restarted
    finally:
        await trio.to_thread.run_sync(server.kill)
