"""examples/board as real processes: `roomcast serve` with the board's hooks, and the board
(FastAPI under uvicorn). A browser-like client logs in over HTTP and opens a WebSocket with
the board's cookie and no token (contract §11 connect and rpc, §12, §13, §15)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from examples.board.app import COOKIE
from examples.board.run import (
    ROOT,
    Wiring,
    app_command,
    app_env,
    clean_env,
    roomcast_command,
    roomcast_env,
)

from tests.support import WAIT, Client, free_port

START = 30.0  # seconds a fresh interpreter may take to start listening on a busy machine


class Child:
    """A child process and what it wrote (stdout and stderr); `seen(text)` waits for a
    line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._waiting: dict[str, trio.Event] = {}
        self.ended = False

    async def read_output(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                for text, event in self._waiting.items():
                    if text in line:
                        event.set()
        self.ended = True  # output closed: it exited; nobody waits for a line in vain
        for event in self._waiting.values():
            event.set()

    async def seen(self, text: str, timeout: float = START) -> None:
        """Return once a line holds `text`; fail when it ends or time runs out."""
        event = self._waiting.setdefault(text, trio.Event())
        if not self.ended and not any(text in line for line in self.lines):
            with trio.move_on_after(timeout):
                await event.wait()
        if any(text in line for line in self.lines):
            return
        log = "\n".join(self.lines[-20:])
        why = "it ended" if self.ended else f"{timeout} s passed"
        raise AssertionError(f"no line with {text!r} ({why}):\n{log}")

    async def stop(self) -> None:
        """SIGTERM by PID, SIGKILL if it is still running after WAIT seconds."""
        if self.process.returncode is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        with trio.move_on_after(WAIT):
            await self.process.wait()
            return
        os.kill(self.process.pid, signal.SIGKILL)
        with trio.fail_after(WAIT):
            await self.process.wait()


@asynccontextmanager
async def child(command: list[str], env: dict[str, str],
                *ready: str) -> AsyncIterator[Child]:
    """Start `command`; yield once it wrote each of `ready`; stop it by PID at the end."""
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=env, cwd=str(ROOT))
    started = Child(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(started.read_output)
            for text in ready:
                await started.seen(text)
            try:
                yield started
            finally:
                await started.stop()
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGKILL)
            with trio.move_on_after(WAIT):
                await process.wait()


@asynccontextmanager
async def board_and_roomcast() -> AsyncIterator[Wiring]:
    """The board and roomcast on free ports, wired as `python -m examples.board` does."""
    wiring = Wiring(port=free_port(), http_port=free_port(), app_port=free_port(),
                    events_delay=0.3)
    async with child(app_command(wiring), app_env(wiring), "Application startup complete"), \
            child(roomcast_command(wiring), roomcast_env(wiring), " listening "):
        yield wiring


async def log_in(http: httpx.AsyncClient, user: str) -> str:
    """GET /login?user=…; the Cookie header value the board's session cookie makes."""
    answer = await http.get("/login", params={"user": user})
    assert answer.status_code == 303, answer.text
    cookie = f"{COOKIE}={answer.cookies[COOKIE]}"
    http.cookies.clear()  # every request below names its user's cookie itself
    return cookie


@asynccontextmanager
async def websocket(wiring: Wiring, cookie: str | None) -> AsyncIterator[Client]:
    """A WebSocket to roomcast without a token, with the cookie a browser would send."""
    headers = [(b"cookie", cookie.encode())] if cookie is not None else None
    async with trio_websocket.open_websocket_url(
            wiring.ws_url, extra_headers=headers, connect_timeout=WAIT,
            disconnect_timeout=WAIT) as ws:
        yield Client(ws)


async def message(client: Client, event: str, **data: Any) -> dict[str, Any]:
    """The next message frame with this event name (and these data fields), skipping
    other frames."""
    with trio.fail_after(WAIT):
        while True:
            frame = await client.recv_type("message")
            if frame["event"] == event and all(frame["data"].get(k) == v
                                               for k, v in data.items()):
                return frame


async def test_the_board_logs_in_by_cookie_subscribes_publishes_and_answers_commands() -> None:
    async with board_and_roomcast() as wiring, httpx.AsyncClient(
            base_url=wiring.app_url, trust_env=False, timeout=WAIT) as http:
        alice = await log_in(http, "alice")
        bob = await log_in(http, "bob")

        async with websocket(wiring, None) as nobody:  # no cookie: the board refuses
            assert (await nobody.closed())[0] == 4401
        forged = alice.rsplit(".", 1)[0] + "." + "0" * 64
        async with websocket(wiring, forged) as mallory:
            assert (await mallory.closed())[0] == 4401

        async with websocket(wiring, alice) as ws:
            connected = await ws.recv()
            assert connected["type"] == "connected" and connected["user_id"] == "alice"

            # Creating a project makes alice its member: the board subscribes her
            # live connection server-side (§12).
            made = await http.post("/projects", json={"name": "Launch"},
                                   headers={"cookie": alice})
            assert made.status_code == 200, made.text
            project = made.json()
            frame = await ws.recv_type("subscribed")
            assert frame["server"] is True and frame["rooms"][project["room"]]["ok"] is True

            # bob is added while away; his next connection gets the room from the hook.
            added = await http.post(f"/projects/{project['id']}/members",
                                    json={"user_id": "bob"}, headers={"cookie": alice})
            assert added.json()["live_connections"] == 0
            async with websocket(wiring, bob) as bob_ws:
                assert (await bob_ws.recv())["user_id"] == "bob"
                frame = await bob_ws.recv_type("subscribed")
                assert frame["server"] is True and project["room"] in frame["rooms"]
                # roomcast's user_online for bob (§13), told to the project by the board;
                # alice's own may come first, depending on when it arrived.
                await message(ws, "user.online", user_id="bob")

                task = (await http.post(f"/projects/{project['id']}/tasks",
                                        json={"title": "Write the docs"},
                                        headers={"cookie": alice})).json()
                for client in (ws, bob_ws):
                    created = await message(client, "task.created")
                    assert created["room"] == project["room"]
                    assert created["data"]["title"] == "Write the docs"
                await http.post(f"/projects/{project['id']}/tasks/{task['id']}/move",
                                json={"column": "doing"}, headers={"cookie": bob})
                moved = await message(ws, "task.moved")
                assert moved["data"]["column"] == "doing" and moved["data"]["from"] == "todo"

                reply = await ws.call({"type": "request_metrics", "id": "m1"})
                assert reply["type"] == "request_metrics", reply
                assert reply["data"]["projects"] == 1
                assert reply["data"]["tasks"] == {"todo": 0, "doing": 1, "done": 0}
                assert "bob" in reply["data"]["online"]  # bob's user_online has come

            await message(ws, "user.offline", user_id="bob")  # bob left: user_offline
            unknown = await ws.call({"type": "no_such_command", "id": "u1"})
            assert unknown["type"] == "error" and unknown["code"] == "unknown_type"


async def test_the_boards_hooks_refuse_calls_not_signed_by_roomcast() -> None:
    async with board_and_roomcast() as wiring, httpx.AsyncClient(
            base_url=wiring.app_url, trust_env=False, timeout=WAIT) as http:
        alice = await log_in(http, "alice")
        body = json.dumps({"hook": "connect", "headers": {"cookie": alice}})
        answer = await http.post("/roomcast/connect", content=body,
                                 headers={"x-roomcast-signature": "sha256=" + "0" * 64})
        assert answer.json() == {"error": {"code": 4403, "message": "not from roomcast"}}
        answer = await http.post("/roomcast/events", content=b"{}")
        assert answer.status_code == 403
        assert (await http.get("/me")).status_code == 401


async def test_python_m_examples_board_starts_both_and_stops_both() -> None:
    """The README's one command: both come up wired together; SIGTERM stops both."""
    wiring = Wiring(port=free_port(), http_port=free_port(), app_port=free_port())
    command = [sys.executable, "-m", "examples.board", "--port", str(wiring.port),
               "--http-port", str(wiring.http_port), "--app-port", str(wiring.app_port)]
    async with child(command, clean_env(), "Application startup complete",
                     " listening ") as runner, httpx.AsyncClient(
            base_url=wiring.app_url, trust_env=False, timeout=WAIT) as http:
        alice = await log_in(http, "alice")
        async with websocket(wiring, alice) as ws:
            assert (await ws.recv())["user_id"] == "alice"
        os.kill(runner.process.pid, signal.SIGTERM)
        with trio.fail_after(3 * WAIT):  # it gives each child WAIT to stop
            assert await runner.process.wait() == 0, "\n".join(runner.lines[-20:])
    for port in (wiring.port, wiring.app_port):  # both children are gone with it
        with pytest.raises(OSError):
            await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
