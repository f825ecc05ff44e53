"""The first ten minutes, over real processes: `serve --dev` keeps its secret across a
restart, and each common mistake is answered with one line and a non-zero exit status."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import jwt
import trio
import trio_websocket

from roomcast.cli import DEV_BANNER, _serve
from tests.support import WAIT, free_port, running_server, server_settings

START = 20.0  # seconds a fresh interpreter may take to start on a busy machine
ROOT = Path(__file__).resolve().parents[2]
TOKEN = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


def clean_env() -> dict[str, str]:
    """This environment without any ROOMCAST_* variable, so only our flags count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}


class Child:
    """A `python -m roomcast ...` child: its stderr lines as they come (a script's output),
    read under time-outs."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._more = trio.Event()

    async def read(self) -> None:
        stream = self.process.stderr or self.process.stdout
        assert stream is not None
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            self.lines += [line.decode(errors="replace") for line in lines]
            self._more.set()
            self._more = trio.Event()

    async def until(self, text: str, after: int = 0, timeout: float = START) -> str:
        """The first line from index `after` on that holds `text`."""
        with trio.fail_after(timeout):
            while True:
                for line in self.lines[after:]:
                    if text in line:
                        return line
                await self._more.wait()

    async def exit_code(self, timeout: float = WAIT) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def child(*args: str, cwd: Path = ROOT) -> AsyncIterator[Child]:
    """`python -m roomcast ARGS` (or a script, when ARGS starts with a path); killed by PID
    if still running at the end."""
    script = args[0].endswith(".py")
    command = [sys.executable, *args] if script else [sys.executable, "-m", "roomcast", *args]
    process = await trio.lowlevel.open_process(
        command, cwd=cwd, env=clean_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if script else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if script else subprocess.PIPE,
    )
    watched = Child(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watched.read)
            yield watched
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roomcast", *args], capture_output=True,
                          text=True, timeout=START, env=clean_env(), cwd=cwd,
                          stdin=subprocess.DEVNULL, check=False)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command printed (asserting it is one, and no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and DEV_BANNER not in result.stderr
    return lines[0]


async def hello(url: str) -> dict[str, object]:
    """The first frame a WebSocket connection to `url` gets."""
    async with trio_websocket.open_websocket_url(url, connect_timeout=WAIT,
                                                 disconnect_timeout=WAIT) as ws:
        with trio.fail_after(WAIT):
            frame: dict[str, object] = json.loads(await ws.get_message())
    return frame


# ------------------------------------------------------------------ the dev secret is kept
async def test_a_token_from_the_first_dev_run_is_accepted_by_the_second(tmp_path: Path) -> None:
    port = free_port()
    serve = ("serve", "--dev", "--port", str(port), "--http-port", "0")
    async with child(*serve, cwd=tmp_path) as first:
        await first.until(" listening ")
        token = TOKEN.search("\n".join(first.lines))
        secret = await first.until("secret: ")
        kept = await first.until("kept in ")
        assert token is not None, first.lines
        assert (await hello(f"ws://127.0.0.1:{port}/ws?token={token[0]}"))["user_id"] == "dev"
        first.process.send_signal(signal.SIGINT)
        assert await first.exit_code() == 0
    path = tmp_path / ".roomcast" / "dev-secret"
    assert str(path) in kept
    assert path.read_text().strip() == secret.split("secret: ")[1].strip()
    assert path.stat().st_mode & 0o077 == 0  # the owner's alone

    async with child(*serve, cwd=tmp_path) as second:
        await second.until(" listening ")
        assert await second.until("secret: ") == secret
        frame = await hello(f"ws://127.0.0.1:{port}/ws?token={token[0]}")
        second.process.send_signal(signal.SIGINT)
        assert await second.exit_code() == 0
    assert (frame["type"], frame["user_id"]) == ("connected", "dev")


async def test_a_tailing_cli_client_comes_back_after_a_dev_server_restart(
    tmp_path: Path
) -> None:
    port = free_port()
    serve = ("serve", "--dev", "--port", str(port), "--http-port", "0")
    async with child(*serve, cwd=tmp_path) as first:
        await first.until(" listening ")
        token = TOKEN.search("\n".join(first.lines))
        assert token is not None
        async with child("client", f"ws://127.0.0.1:{port}/ws", "--token", token[0],
                         "tail", "r1") as tail:
            await tail.until("tailing r1")
            first.process.send_signal(signal.SIGINT)
            stopping = await first.until(" stopping ")
            assert "connections=1" in stopping and "grace=1s" in stopping
            assert await first.exit_code() == 0  # drained within --dev's 1 s grace
            lost = await tail.until("connection lost")
            assert "1001" in lost
            mark = len(tail.lines)
            async with child(*serve, cwd=tmp_path) as second:
                await second.until(" listening ")
                await tail.until("# connected", after=mark)
                await tail.until("resumed", after=mark)
                second.process.send_signal(signal.SIGINT)
                assert await second.exit_code() == 0
            assert not [line for line in tail.lines if "4401" in line], tail.lines


async def test_dev_with_a_given_secret_uses_it_and_keeps_no_file(tmp_path: Path) -> None:
    port, secret = free_port(), "given-secret-0123456789-0123456789-abc"
    async with child("serve", "--dev", "--jwt-secret", secret, "--port", str(port),
                     "--http-port", "0", cwd=tmp_path) as server:
        await server.until(" listening ")
        token = TOKEN.search("\n".join(server.lines))
        assert token is not None
        assert jwt.decode(token[0], secret, algorithms=["HS256"])["sub"] == "dev"
        assert (await hello(f"ws://127.0.0.1:{port}/ws?token={token[0]}"))["user_id"] == "dev"
        server.process.send_signal(signal.SIGINT)
        assert await server.exit_code() == 0
    assert not (tmp_path / ".roomcast").exists()


async def test_a_second_ctrl_c_stops_at_once_instead_of_draining(tmp_path: Path) -> None:
    port = free_port()
    async with child("serve", "--dev", "--shutdown-grace", "60", "--port", str(port),
                     "--http-port", "0", cwd=tmp_path) as server:
        await server.until(" listening ")
        token = TOKEN.search("\n".join(server.lines))
        assert token is not None
        url = f"ws://127.0.0.1:{port}/ws?token={token[0]}"
        # Two connections: draining closes the second only 30 s after the first.
        async with trio_websocket.open_websocket_url(
            url, connect_timeout=WAIT, disconnect_timeout=WAIT) as one, \
                trio_websocket.open_websocket_url(
            url, connect_timeout=WAIT, disconnect_timeout=WAIT) as two:
            with trio.fail_after(WAIT):
                await one.get_message()
                await two.get_message()
            server.process.send_signal(signal.SIGINT)
            stopping = await server.until(" stopping ")
            assert "connections=2" in stopping and "grace=60s" in stopping
            server.process.send_signal(signal.SIGINT)
            await server.until("stopping at once")
            assert await server.exit_code() == 0  # long before the 60 s grace


# ------------------------------------------------------------------ each mistake, one line
def listening_socket(port: int) -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder


def test_a_websocket_port_in_use_is_one_line_naming_it_before_any_banner(
    tmp_path: Path
) -> None:
    port = free_port()
    with listening_socket(port):
        result = run("serve", "--dev", "--port", str(port), "--http-port", "0", cwd=tmp_path)
    assert result.returncode != 0
    line = one_line(result)
    assert f"port {port}" in line and "already in use" in line and "--port" in line


def test_an_http_port_in_use_names_the_http_port_setting(tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    with listening_socket(http_port):
        result = run("serve", "--dev", "--port", str(port), "--http-port", str(http_port),
                     cwd=tmp_path)
    assert result.returncode != 0
    line = one_line(result)
    assert f"port {http_port}" in line and "--http-port" in line


def test_http_port_equal_to_port_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = run("serve", "--dev", "--port", str(port), "--http-port", str(port), cwd=tmp_path)
    assert result.returncode != 0
    line = one_line(result)
    assert "http_port" in line and str(port) in line and "--http-port" in line


async def test_a_port_taken_between_the_check_and_the_bind_is_one_line_too() -> None:
    port = free_port()
    with listening_socket(port):
        failure = await _serve(server_settings(port=port))
    assert failure is not None and f"port {port}" in failure and "--port" in failure


def test_a_token_with_a_non_positive_ttl_is_refused() -> None:
    for ttl in ("-10", "0"):
        result = run("token", "--jwt-secret", "s" * 32, "--sub", "alice", "--ttl", ttl)
        assert result.returncode != 0 and result.stdout == ""
        assert "--ttl" in one_line(result)


async def test_the_cli_client_pointed_at_the_http_port_says_to_use_the_websocket_port() -> None:
    async with running_server(http_port=free_port()) as router:
        result = await trio.to_thread.run_sync(lambda: run(
            "client", f"ws://127.0.0.1:{router.http_port}/ws", "--token", "x.y.z"))
    assert result.returncode == 1
    line = one_line(result)
    assert "HTTP 403" in line and "WebSocket port" in line


def test_the_cli_client_refuses_a_token_with_a_line_break() -> None:
    result = run("client", "ws://127.0.0.1:1/ws", "--token", "eyJ.a\nb.c")
    assert result.returncode == 2
    assert "one line" in one_line(result)


def test_the_cli_client_says_each_attempt_then_that_nothing_answers() -> None:
    result = run("client", f"ws://127.0.0.1:{free_port()}/ws", "--token", "x.y.z",
                 "--wait", "2")
    assert result.returncode == 1
    *attempts, last = result.stderr.strip().splitlines()
    assert "is the server running" in last and "Traceback" not in result.stderr
    assert attempts and attempts[0].startswith("# no connection yet")
    assert all(a.startswith(("# no connection yet", "# still reconnecting")) for a in attempts)
    assert len(attempts) >= 2, "repeated attempts are said, not only the first"


# ------------------------------------------------------------------ embedding
async def test_ctrl_c_on_the_embedding_example_stops_it_quietly() -> None:
    port = free_port()
    async with child(str(ROOT / "examples" / "embed_app.py"), "--port", str(port)) as app:
        await app.until("tick 1 published")
        app.process.send_signal(signal.SIGINT)
        assert await app.exit_code() == 0
        await app.until("stopped")
    assert not [line for line in app.lines if "Traceback" in line or "Error" in line]


def test_the_readme_embedding_snippet_runs_and_returns_without_warnings() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Embedding"):]
    code = section[section.index("```python\n") + 10:section.index("\n```", 10)]
    # Free ports instead of 8000/8001, which another server on this machine may hold.
    code = code.replace("roomcast.Settings(", "roomcast.Settings(port=0, http_port=0, ")
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                            text=True, timeout=START, env=clean_env(), check=False)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr
