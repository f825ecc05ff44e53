"""`python -m benchmarks.connect_hook`: what the connect hook (§11) adds to a handshake.

One roomcast process (on 127.0.0.1, free ports, stopped by its PID) with a connect hook
pointing at a small application in this process that admits at once; N handshakes one
after another with a JWT, then N through the hook (no token, a session cookie), measured
from the TCP connect to the `connected` frame. Bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

SECRET = "bench-secret-" + "c" * 40
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class _App(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"result": {"user_id": "hooked"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _handshake(port: int, query: str, cookie: str) -> float:
    """Seconds from connect to the `connected` frame."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall((f"GET /ws{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
                   f"Sec-WebSocket-Version: 13\r\n{cookie}\r\n").encode())
        data = b""
        while b'"connected"' not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError(f"refused: {data[-200:]!r}")
            data += chunk
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=500, help="handshakes per kind (max 5000)")
    args = parser.parse_args()
    n = min(args.n, 5000)
    app = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "roomcast", "serve", "--jwt-secret", SECRET, "--port", str(port),
         "--http-port", "0", "--max-connections-per-user", "100000",
         "--connect-hook-url", f"http://127.0.0.1:{app.server_port}/connect"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        token = jwt.encode({"sub": "jwt", "exp": time.time() + 3600}, SECRET, "HS256")
        rows = []
        for kind, query, cookie in (("JWT", f"?token={token}", ""),
                                    ("connect hook", "", "Cookie: session=abc\r\n")):
            for _ in range(20):  # warm up (the hook's pooled connection included)
                _handshake(port, query, cookie)
            times = sorted(_handshake(port, query, cookie) for _ in range(n))
            rows.append((kind, statistics.median(times) * 1000,
                         times[int(0.99 * (len(times) - 1))] * 1000))
        print(f"{'handshake':<14} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}")
        for kind, p50, p99 in rows:
            print(f"{kind:<14} {n:>5} {p50:>8.2f} {p99:>8.2f}")
        print(f"hook / JWT: p50 x{rows[1][1] / rows[0][1]:.2f}, p99 x{rows[1][2] / rows[0][2]:.2f}")
    finally:
        server.terminate()
        server.wait(timeout=10)
        app.shutdown()


if __name__ == "__main__":
    main()
