"""The JavaScript tools of the browser-client tests (tests/js: typescript, esbuild, react),
installed by `scripts/setup.sh --test` with `npm ci`, and a static HTTP server for pages
built with them."""

from __future__ import annotations

import functools
import os
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "js"
STATIC = ROOT / "src" / "roomcast" / "static"
TOOL_WAIT = 120.0  # s: a type check or a build on a busy 2-core machine


def tool(name: str) -> Path:
    """A command from tests/js/node_modules/.bin; fails (never skips) when it is missing."""
    path = JS_DIR / "node_modules" / ".bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `scripts/setup.sh --test` (it installs Node.js "
                    "and npm from Debian and runs `npm ci` in tests/js); these tests are "
                    "never skipped")
    return path


def run(name: str, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """Run a tool from tests/js with tests/js as the working directory; modules imported by
    files outside it (src/roomcast/static) are found in its node_modules too."""
    env = {**os.environ, "NODE_PATH": str(JS_DIR / "node_modules")}
    return subprocess.run([str(tool(name)), *map(str, args)], cwd=JS_DIR, env=env,
                          capture_output=True, timeout=TOOL_WAIT, check=False)


def esbuild(*args: str | Path) -> bytes:
    """esbuild's output (stdout); the test fails with its messages when it fails."""
    done = run("esbuild", *args, "--log-level=warning")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class StaticServer:
    """Serves a folder on 127.0.0.1 (a free port) from a thread, until close()."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
