"""What the tests share: a running server, tokens, and a small JSON WebSocket client."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import trio
import trio_websocket

from roomcast import Settings, open_router
from roomcast.router import Router

SECRET = "test-secret-0123456789-0123456789-abcdef"
WAIT = 5.0  # every wait in the tests has this time-out unless it says otherwise


def make_token(sub: str = "alice", *, rooms: list[str] | None = None,
               publish: list[str] | None = None, ttl: float = 3600, secret: str = SECRET,
               algorithm: str = "HS256", **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl, **claims}
    if rooms is not None:
        body["rooms"] = rooms
    if publish is not None:
        body["publish"] = publish
    return jwt.encode(body, secret, algorithm=algorithm)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"port": 0, "http_port": 0, "jwt_secret": SECRET, "node": "test"}
    base.update(overrides)
    return Settings(**base)


@asynccontextmanager
async def running_server(**overrides: Any) -> AsyncIterator[Router]:
    """A real roomcast server on 127.0.0.1 (random ports) for the length of the block."""
    settings = server_settings(**overrides)
    async with open_router(settings) as router, trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        try:
            yield router
        finally:
            nursery.cancel_scope.cancel()


class Client:
    """A JSON-speaking WebSocket client with time-outs on every wait."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.connected: dict[str, Any] = {}

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            frame = json.dumps(frame)
        await self.ws.send_message(frame)

    async def recv(self, timeout: float = WAIT) -> dict[str, Any]:
        with trio.fail_after(timeout):
            message = await self.ws.get_message()
        frame: dict[str, Any] = json.loads(message)
        return frame

    async def recv_type(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        """The next frame of a type, skipping others (presence events, say)."""
        with trio.fail_after(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame.get("type") == kind:
                    return frame

    async def call(self, frame: dict[str, Any], timeout: float = WAIT) -> dict[str, Any]:
        """Send a command and return the reply that echoes its id."""
        await self.send(frame)
        with trio.fail_after(timeout):
            while True:
                reply = await self.recv(timeout)
                if reply.get("id") == frame.get("id") and reply.get("type") != "message":
                    return reply

    async def subscribe(self, *rooms: str, **extra: Any) -> dict[str, Any]:
        return await self.call({"type": "subscribe", "id": f"sub-{rooms[0]}",
                                "rooms": list(rooms), **extra})

    async def publish(self, room: str, data: Any, **extra: Any) -> dict[str, Any]:
        return await self.call({"type": "publish", "id": f"pub-{time.monotonic_ns()}",
                                "room": room, "data": data, **extra})

    async def closed(self, timeout: float = WAIT) -> tuple[int | None, str | None]:
        """Read until the server closes; returns (code, reason)."""
        with trio.fail_after(timeout):
            while True:
                try:
                    await self.ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    return exc.reason.code, exc.reason.reason


def ws_url(router: Router, token: str | None = None, path: str | None = None) -> str:
    url = f"ws://127.0.0.1:{router.ws_port}{path or router.settings.path}"
    return f"{url}?token={token}" if token is not None else url


@asynccontextmanager
async def connect(router: Router, token: str | None = None, *, sub: str = "alice",
                  rooms: list[str] | None = None, publish: list[str] | None = None,
                  expect_connected: bool = True,
                  headers: list[tuple[str, str]] | None = None) -> AsyncIterator[Client]:
    """A connected client; by default with a token for `sub` that may read and publish '*'."""
    if token is None:
        token = make_token(sub, rooms=rooms if rooms is not None else ["*"],
                           publish=publish if publish is not None else ["*"])
    async with trio_websocket.open_websocket_url(
        ws_url(router, token), extra_headers=headers, connect_timeout=WAIT,
        disconnect_timeout=WAIT,
    ) as ws:
        client = Client(ws)
        if expect_connected:
            client.connected = await client.recv()
            assert client.connected["type"] == "connected", client.connected
        yield client


class HttpResponse:
    """One HTTP answer: status, headers (lower-case names) and body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status} {self.body[:200]!r}>"


async def http_request(router: Router, method: str, path: str, *,
                       body: Any = None, api_key: str | None = None,
                       headers: dict[str, str] | None = None,
                       timeout: float = WAIT) -> HttpResponse:
    """One HTTP/1.1 request to the server's HTTP port over a fresh socket (h11, no client
    library). `body` may be bytes/str (sent as is) or anything JSON-encodable."""
    import h11

    assert router.http_port, "start the server with http_port=free_port()"
    if body is None:
        data = b""
    elif isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body).encode()
    head = {"host": f"127.0.0.1:{router.http_port}", "connection": "close"}
    if body is not None:
        head["content-type"] = "application/json"
        head["content-length"] = str(len(data))
    if api_key is not None:
        head["authorization"] = f"Bearer {api_key}"
    head.update(headers or {})
    conn = h11.Connection(h11.CLIENT)
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream("127.0.0.1", router.http_port)
        async with stream:
            out = conn.send(h11.Request(method=method, target=path, headers=list(head.items())))
            if data:
                out += conn.send(h11.Data(data=data))
            out += conn.send(h11.EndOfMessage())
            await stream.send_all(out)
            status, got, chunks = 0, {}, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    got = {k.decode().lower(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    chunks += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return HttpResponse(status, got, bytes(chunks))
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError(f"the server closed before answering {method} {path}")


class ServerProcess:
    """`python -m roomcast serve` as a child process on fixed ports, so a test can kill it
    (by PID) and start it again on the same ports. Synchronous on purpose: browser tests
    call it directly, trio tests through `trio.to_thread.run_sync`."""

    def __init__(self, *args: str, api_key: str = "k", secret: str = SECRET) -> None:
        self.port = free_port()
        self.http_port = free_port()
        self.api_key = api_key
        self.secret = secret
        self.args = args
        self.process: Any = None  # subprocess.Popen[bytes] while running
        self.lines: list[str] = []  # everything it wrote to stderr, over every start
        self.starts = 0

    def start(self, timeout: float = 30.0) -> None:
        """Start it and return once it logged that it is listening (both ports)."""
        import os
        import subprocess
        import sys
        import threading

        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
        command = [sys.executable, "-m", "roomcast", "serve", "--jwt-secret", self.secret,
                   "--api-key", self.api_key, "--port", str(self.port), "--http-port",
                   str(self.http_port), "--node", f"proc{self.starts}", *self.args]
        self.starts += 1
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        self.process = process
        listening = threading.Event()

        def read() -> None:
            assert process.stderr is not None
            for raw in process.stderr:
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append(line)
                if " listening " in f" {line} ":
                    listening.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not listening.wait(0.05):
            if process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                log = "\n".join(self.lines[-20:])
                raise RuntimeError(f"roomcast serve did not start:\n{log}")

    def kill(self) -> None:
        """SIGKILL by PID (a crash: clients see 1006), and reap it."""
        import os
        import signal

        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=WAIT)
        self.process = None

    def ws_url(self, token: str | None = None) -> str:
        url = f"ws://127.0.0.1:{self.port}/ws"
        return f"{url}?token={token}" if token is not None else url

    def http_url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request to the HTTP listener with the API key; (status, decoded JSON)."""
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.http_url(path), data=data, method=method,
            headers={"Authorization": f"Bearer {self.api_key}",
                     "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=WAIT) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def publish(self, room: str, data: Any, event: str | None = None) -> int:
        """POST /api/publish; the new message's offset."""
        status, body = self.api("POST", "/api/publish",
                                {"room": room, "data": data, "event": event})
        assert status == 200, (status, body)
        offset: int = body["offset"]
        return offset

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class TcpProxy:
    """A TCP relay on 127.0.0.1 that a test can misbehave with: `hold()` stops relaying on
    the connections open now (a dead link: nothing is closed), `cut()` drops them. New
    connections are relayed normally. Threads, so it serves trio and browser tests alike."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._pairs: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/ws", token: str | None = None) -> str:
        url = f"ws://127.0.0.1:{self.port}{path}"
        return f"{url}?token={token}" if token is not None else url

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=WAIT)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            pair: dict[str, Any] = {"sockets": (client, upstream), "up": False, "down": False}
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair, client, upstream, "up"),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, upstream, client, "down"),
                             daemon=True).start()

    @staticmethod
    def _pump(pair: dict[str, Any], source: socket.socket, sink: socket.socket,
              direction: str) -> None:
        from contextlib import suppress

        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if pair[direction]:
                    continue  # held: swallowed, like a link that stopped delivering
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def hold(self, up: bool = True, down: bool = True) -> None:
        """Stop relaying (client→server when `up`, server→client when `down`) on every
        connection open now; nothing is closed."""
        with self._lock:
            for pair in self._pairs:
                pair["up"] = pair["up"] or up
                pair["down"] = pair["down"] or down

    def cut(self) -> None:
        """Drop every connection open now (both ends see the TCP connection end)."""
        from contextlib import suppress

        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair["sockets"]:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()
