"""`roomcast serve` and `roomcast token` as real processes: drain on SIGTERM, refusing to
start without a key, --dev, and minting tokens (contract §1, §7, §10)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
import trio
import trio_websocket

from tests.support import SECRET, WAIT, connect, free_port, make_token, running_server

START = 20.0  # seconds a fresh interpreter may take to start listening on a busy machine


def clean_env() -> dict[str, str]:
    """This environment without any ROOMCAST_* variable, so only our flags count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}


class Server:
    """A `python -m roomcast serve` child process and what it wrote to stderr."""

    def __init__(self, process: trio.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.lines: list[str] = []
        self.listening = trio.Event()

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self.lines.append(line.decode(errors="replace"))
                if " listening " in f" {self.lines[-1]} ":
                    self.listening.set()

    def url(self, token: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?token={token}"

    async def wait_exit(self, timeout: float) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def serve_process(*args: str) -> AsyncIterator[Server]:
    """Start `roomcast serve` on free ports with `args`; kill it (by PID) if still running
    at the end."""
    port = free_port()
    command = [sys.executable, "-m", "roomcast", "serve", "--port", str(port),
               "--http-port", "0", "--node", "proc", *args]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=clean_env(),
    )
    server = Server(process, port)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.read_stderr)
            with trio.fail_after(START):
                await server.listening.wait()
            yield server
            with trio.fail_after(WAIT):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def wait_for_close(url: str, connected: trio.Event, closes: list[tuple[float, int | None]]
                         ) -> None:
    async with trio_websocket.open_websocket_url(
        url, connect_timeout=WAIT, disconnect_timeout=WAIT
    ) as ws:
        with trio.fail_after(WAIT):
            assert json.loads(await ws.get_message())["type"] == "connected"
        connected.set()
        with trio.fail_after(3 * WAIT):
            try:
                while True:
                    await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                closes.append((trio.current_time(), exc.reason.code))


async def can_connect(url: str) -> bool:
    """Whether a WebSocket handshake succeeds and the first frame is `connected`."""
    try:
        async with trio_websocket.open_websocket_url(
            url, connect_timeout=WAIT, disconnect_timeout=WAIT
        ) as ws:
            with trio.fail_after(WAIT):
                return bool(json.loads(await ws.get_message())["type"] == "connected")
    except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed):
        return False


# ------------------------------------------------------------------ graceful shutdown
async def test_sigterm_closes_every_client_with_1001_spread_over_the_grace_and_exits_0(
) -> None:
    grace, clients = 2.0, 6
    async with serve_process("--jwt-secret", SECRET, "--shutdown-grace", str(grace)) as server:
        closes: list[tuple[float, int | None]] = []
        async with trio.open_nursery() as nursery:
            for n in range(clients):
                connected = trio.Event()
                nursery.start_soon(wait_for_close, server.url(make_token(f"u{n}")), connected,
                                   closes)
                with trio.fail_after(WAIT):
                    await connected.wait()
            sent_at = trio.current_time()
            server.process.send_signal(signal.SIGTERM)
        code = await server.wait_exit(grace + WAIT)
    assert code == 0
    assert [c for _, c in closes] == [1001] * clients
    times = sorted(t - sent_at for t, _ in closes)
    span = times[-1] - times[0]
    # Evenly spread: the last close comes (clients-1)/clients of the grace after the first.
    assert span >= 0.5 * grace * (clients - 1) / clients, times
    assert times[-1] <= grace + WAIT, times
    assert len({round(t, 2) for t in times}) > clients // 2, times  # not all at once


async def test_new_connections_are_refused_while_draining() -> None:
    grace = 3.0
    async with serve_process("--jwt-secret", SECRET, "--shutdown-grace", str(grace)) as server:
        closes: list[tuple[float, int | None]] = []
        async with trio.open_nursery() as nursery:
            for n in range(3):
                connected = trio.Event()
                nursery.start_soon(wait_for_close, server.url(make_token(f"u{n}")), connected,
                                   closes)
                with trio.fail_after(WAIT):
                    await connected.wait()
            server.process.send_signal(signal.SIGTERM)
            with trio.fail_after(WAIT):  # the first close says the drain has begun
                while not closes:  # noqa: ASYNC110 (a close seen by another task)
                    await trio.sleep(0.01)
            refused = not await can_connect(server.url(make_token("late")))
            try:  # the listener is closed: refused by the TCP stack, as docs/deployment.md says
                await (await trio.open_tcp_stream("127.0.0.1", server.port)).aclose()
                tcp_refused = False
            except OSError:
                tcp_refused = True
            still_draining = len(closes) < 3
        assert await server.wait_exit(grace + WAIT) == 0
    assert refused and tcp_refused
    assert still_draining


async def test_sigint_drains_like_sigterm() -> None:
    async with serve_process("--jwt-secret", SECRET, "--shutdown-grace", "0.2") as server:
        closes: list[tuple[float, int | None]] = []
        async with trio.open_nursery() as nursery:
            connected = trio.Event()
            nursery.start_soon(wait_for_close, server.url(make_token()), connected, closes)
            with trio.fail_after(WAIT):
                await connected.wait()
            server.process.send_signal(signal.SIGINT)
        assert await server.wait_exit(WAIT) == 0
    assert [c for _, c in closes] == [1001]


async def test_sigterm_with_no_clients_exits_0_promptly() -> None:
    async with serve_process("--jwt-secret", SECRET, "--shutdown-grace", "10") as server:
        start = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert await server.wait_exit(WAIT) == 0
        assert time.monotonic() - start < WAIT


# ------------------------------------------------------------------ starting without a key
def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roomcast", *args], capture_output=True,
                          text=True, timeout=START, env=env or clean_env(),
                          stdin=subprocess.DEVNULL, check=False)


def test_serve_without_a_key_exits_non_zero_with_a_one_line_message() -> None:
    result = run_cli("serve", "--port", str(free_port()), "--http-port", "0")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "jwt_secret" in lines[0] and "--dev" in lines[0]


def test_serve_with_a_bad_setting_exits_non_zero_with_a_one_line_message() -> None:
    result = run_cli("serve", "--jwt-secret", SECRET, "--port", "not-a-port")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "port" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


async def test_serve_dev_prints_a_secret_and_a_working_token_for_dev() -> None:
    async with serve_process("--dev", "--shutdown-grace", "0") as server:
        text = "\n".join(server.lines)
        assert "DEVELOPMENT ONLY" in text
        secret = re.search(r"secret: (\S+)", text)
        token = re.search(r"(eyJ[\w-]+\.[\w-]+\.[\w-]+)", text)
        assert secret and token, text
        claims = jwt.decode(token.group(1), secret.group(1), algorithms=["HS256"])
        assert claims["sub"] == "dev"
        async with trio_websocket.open_websocket_url(
            server.url(token.group(1)), connect_timeout=WAIT, disconnect_timeout=WAIT
        ) as ws:
            with trio.fail_after(WAIT):
                connected = json.loads(await ws.get_message())
        server.process.send_signal(signal.SIGTERM)
        assert await server.wait_exit(WAIT) == 0
    assert connected["type"] == "connected"
    assert connected["user_id"] == "dev"


# ------------------------------------------------------------------ roomcast token
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_token_mints_a_jwt_with_the_given_claims() -> None:
    before = int(time.time())
    result = run_cli("token", "--sub", "alice", "--rooms", "project:*", "--publish",
                     "project:*", "--ttl", "3600", "--jwt-secret", "S")
    after = int(time.time())
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    claims: dict[str, Any] = jwt.decode(token, "S", algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["rooms"] == ["project:*"]
    assert claims["publish"] == ["project:*"]
    assert before + 3600 <= claims["exp"] <= after + 3600
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "T", algorithms=["HS256"])


async def test_a_minted_token_connects_with_its_rooms_and_publish_rights() -> None:
    secret = "minted-secret-0123456789-0123456789"
    result = run_cli("token", "--sub", "alice", "--rooms", "project:*", "--publish",
                     "project:*", "--ttl", "3600", "--jwt-secret", secret)
    token = result.stdout.strip()
    async with running_server(jwt_secret=secret) as router, connect(router, token) as alice:
        reply = await alice.subscribe("project:1", "other:1")
        published = await alice.publish("project:1", 1)
        refused = await alice.publish("other:1", 1)
    assert alice.connected["user_id"] == "alice"
    assert reply["rooms"]["project:1"]["ok"] is True
    assert reply["rooms"]["other:1"]["error"] == "forbidden"
    assert published["type"] == "published"
    assert refused["code"] == "forbidden"


def test_token_without_a_secret_exits_non_zero_with_a_one_line_message() -> None:
    result = run_cli("token", "--sub", "alice")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "jwt_secret" in result.stderr
