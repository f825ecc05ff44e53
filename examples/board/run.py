"""Start roomcast and the board together, wired to each other, and stop both on Ctrl-C.

    python -m examples.board [--port 8000] [--http-port 8001] [--app-port 8002]

roomcast gets the board's hook and events URLs, an API key and a hook secret made up for
this run; the board (uvicorn) gets the same key and secret. The commands are built here
so that the test runs exactly what this runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

HOST = "127.0.0.1"  # one host name for the page and roomcast, so the cookie reaches both
ROOT = Path(__file__).resolve().parents[2]  # where `examples.board` is importable from


@dataclass(frozen=True)
class Wiring:
    """Ports and secrets one run shares between roomcast and the board."""

    port: int = 8000  # roomcast's WebSockets
    http_port: int = 8001  # roomcast's HTTP: server API, metrics, roomcast.js
    app_port: int = 8002  # the board
    events_delay: float = 1.0  # seconds away before user_offline
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    hook_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    session_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def app_url(self) -> str:
        return f"http://{HOST}:{self.app_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"


def clean_env() -> dict[str, str]:
    """This environment without ROOMCAST_* variables, so only the flags below count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}


def roomcast_command(w: Wiring) -> list[str]:
    """`roomcast serve` admitting WebSockets only through the board's connect hook (its
    secrets come from `roomcast_env`, so they never show in a process list)."""
    return [sys.executable, "-m", "roomcast", "serve", "--host", HOST,
            "--port", str(w.port), "--http-port", str(w.http_port),
            "--connect-hook-url", f"{w.app_url}/roomcast/connect",
            "--rpc-hook-url", f"{w.app_url}/roomcast/rpc",
            "--events-url", f"{w.app_url}/roomcast/events",
            "--events-delay", str(w.events_delay)]


def roomcast_env(w: Wiring) -> dict[str, str]:
    """roomcast's secrets: the API key the board calls with, the key hooks are signed with."""
    return {**clean_env(), "ROOMCAST_API_KEY": w.api_key,
            "ROOMCAST_HOOK_SECRET": w.hook_secret}


def app_command(w: Wiring) -> list[str]:
    """uvicorn serving the board on its port."""
    return [sys.executable, "-m", "uvicorn", "--factory", "examples.board.app:app_from_env",
            "--host", HOST, "--port", str(w.app_port), "--no-access-log"]


def app_env(w: Wiring) -> dict[str, str]:
    """The board's settings (read by examples.board.app.Config.from_env)."""
    return {**clean_env(), "BOARD_ROOMCAST_HTTP": f"http://{HOST}:{w.http_port}",
            "BOARD_ROOMCAST_WS": w.ws_url, "BOARD_API_KEY": w.api_key,
            "BOARD_HOOK_SECRET": w.hook_secret, "BOARD_SESSION_SECRET": w.session_secret,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")]))}


def stop(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM by PID (roomcast drains, uvicorn finishes), SIGKILL if it takes too long."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.board",
                                     description="Run roomcast and the board together.")
    parser.add_argument("--port", type=int, default=8000, help="roomcast's WebSocket port")
    parser.add_argument("--http-port", type=int, default=8001, help="roomcast's HTTP port")
    parser.add_argument("--app-port", type=int, default=8002, help="the board's port")
    args = parser.parse_args(argv)
    wiring = Wiring(port=args.port, http_port=args.http_port, app_port=args.app_port)
    board = subprocess.Popen(app_command(wiring), env=app_env(wiring), cwd=ROOT)
    roomcast = subprocess.Popen(roomcast_command(wiring), env=roomcast_env(wiring),
                                stdin=subprocess.DEVNULL)
    print(f"board:    {wiring.app_url}/login?user=alice  (then /login?user=bob in another "
          f"browser profile)\nroomcast: {wiring.ws_url} (no token: the board's cookie)\n"
          "Ctrl-C stops both.", flush=True)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started with SIGINT ignored
    try:
        while board.poll() is None and roomcast.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                board.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop(roomcast)
        stop(board)
    failed = [name for name, p in (("the board", board), ("roomcast", roomcast))
              if p.returncode not in (0, -signal.SIGTERM, -signal.SIGINT)]
    if failed:
        print(f"{' and '.join(failed)} stopped with an error (see above); is a port in use? "
              "Choose others with --port, --http-port, --app-port.", file=sys.stderr)
        return 1
    return 0
