"""The accept loop when the process runs out of file descriptors: it says so, keeps the
listener, and serves again once descriptors are free (a real `roomcast serve` process with
a low open-files limit)."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time

from tests.support import SECRET, WAIT, free_port, make_token

FD_LIMIT = 64  # enough to start; a few dozen held connections use up the rest


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def _handshake(port: int) -> dict[str, object]:
    """One WebSocket handshake with a valid token; the server's first frame, decoded."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall((f"GET /ws?token={make_token('probe')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 6:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        head, _, frame = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        while len(frame) < 4:
            frame += s.recv(65536)
        start, size = (4, int.from_bytes(frame[2:4], "big")) if frame[1] == 126 else (2, frame[1])
        while len(frame) < start + size:
            frame += s.recv(65536)
        decoded: dict[str, object] = json.loads(frame[start:start + size])
        return decoded


def test_out_of_file_descriptors_is_logged_and_the_server_recovers() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "roomcast", "serve", "--jwt-secret", SECRET, "--port", str(port),
         "--http-port", "0", "--max-connections-per-user", "1000"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=_limit_fds, env={k: v for k, v in os.environ.items()
                                    if not k.startswith("ROOMCAST_")})
    lines: list[str] = []
    seen = {"listening": threading.Event(), "accept failed": threading.Event()}

    def read() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace")
            lines.append(line)
            for word, flag in seen.items():
                if f" {word} " in line:
                    flag.set()

    threading.Thread(target=read, daemon=True).start()
    held: list[socket.socket] = []
    try:
        assert seen["listening"].wait(30), "".join(lines)
        assert _handshake(port)["type"] == "connected"
        deadline = time.monotonic() + WAIT
        while not seen["accept failed"].is_set():  # fill the server's descriptor table
            assert len(held) < 4 * FD_LIMIT and time.monotonic() < deadline, "".join(lines)
            held.append(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
            seen["accept failed"].wait(0.01)
        assert any("ulimit -n" in line for line in lines if " accept failed " in line)
        for s in held:
            s.close()
        held.clear()
        deadline = time.monotonic() + WAIT
        while True:  # descriptors come back as the server notices the closed connections
            try:
                assert _handshake(port)["type"] == "connected"
                break
            except (OSError, AssertionError):
                assert time.monotonic() < deadline, "".join(lines[-20:])
                time.sleep(0.1)
        assert process.poll() is None, "".join(lines)
    finally:
        for s in held:
            s.close()
        process.kill()
        process.wait(WAIT)
