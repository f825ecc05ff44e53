"""The HTTP endpoint's routes (§8, §15): one whole request in, one encoded response out.

Health, readiness, metrics, the server API (guarded by the API key, compared in constant
time), the demo page and the browser client. Every failure becomes a JSON answer
`{"error", "message"}` whose message says what to do next; a bug is a logged 500, never
a dropped connection. `api_for(router)` gives a Router its one `HttpApi`, whichever port
the request came in on.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any, Final, NamedTuple

import msgspec
import trio

from roomcast import httpops as ops
from roomcast import websocket as ws
from roomcast.backplane import BackplaneUnavailable
from roomcast.codes import ErrorCode
from roomcast.httpbodies import (
    BroadcastBody,
    DisconnectBody,
    HistoryQuery,
    NoParams,
    PublishBody,
    RevokeBody,
    RoomQuery,
    UserRoomBody,
    bad_request,
    check_room,
    decode,
)
from roomcast.httpwire import JSON, HttpError, Request, RequestParser, response
from roomcast.log import event
from roomcast.metrics_export import registry_for, render
from roomcast.router import Router

METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
Headers = tuple[tuple[str, str], ...]
Reply = tuple[int, bytes, str, Headers]
Handler = Callable[[Request], Awaitable[Reply]]
_STATIC: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/roomcast.js": ("roomcast.js", "text/javascript; charset=utf-8"),
    "/roomcast.d.ts": ("roomcast.d.ts", "application/typescript; charset=utf-8"),
    "/roomcast-react.js": ("roomcast-react.js", "text/javascript; charset=utf-8"),
    "/roomcast-react.d.ts": ("roomcast-react.d.ts", "application/typescript; charset=utf-8"),
}
_CHALLENGE: Final = (("WWW-Authenticate", 'Bearer realm="roomcast"'),)
_encode: Final = msgspec.json.Encoder().encode


class Route(NamedTuple):
    methods: tuple[str, ...]
    handler: Handler
    guarded: bool  # needs the API key


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class HttpApi:
    """The routes of one Router's HTTP endpoint, and its tally of answers by route and
    status (exported in /metrics as roomcast_http_requests_total)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.requests: Counter[tuple[str, int]] = Counter()
        self.registry = registry_for(router, self.requests)
        self._key = ""
        self._key_digest = b""
        get, post = ("GET", "HEAD"), ("POST",)
        self.routes: dict[str, Route] = {
            "/healthz": Route(get, self.healthz, False),
            "/readyz": Route(get, self.readyz, False),
            "/metrics": Route(get, self.metrics, False),
            "/roomcast.json": Route(get, self.where, False),
            "/": Route(get, self.static, False),
            **{path: Route(get, self.static, False) for path in _STATIC},
            "/api/publish": Route(post, self.publish, True),
            "/api/batch": Route(post, self.batch, True),
            "/api/presence": Route(get, self.presence, True),
            "/api/history": Route(get, self.history, True),
        }
        for path, kind, method in (
                ("/api/broadcast", BroadcastBody, "broadcast"),
                ("/api/disconnect", DisconnectBody, "disconnect"),
                ("/api/revoke", RevokeBody, "revoke"),
                ("/api/subscribe", UserRoomBody, "subscribe"),
                ("/api/unsubscribe", UserRoomBody, "unsubscribe")):
            self.routes[path] = Route(post, self._body_route(kind, method), True)
        self.routes["/api/stats"] = Route(get, self._body_route(NoParams, "stats", False), True)

    # ------------------------------------------------------------ dispatch
    async def answer(self, request: Request) -> tuple[bytes, bool]:
        """The encoded response to `request`, and whether the connection stays open."""
        route = self.routes.get(request.path)
        label = request.path if route is not None else "other"
        try:
            if "websocket" in request.headers.get("upgrade", "").lower():
                port = self.router.ws_port
                raise HttpError(403, "forbidden", "this is roomcast's HTTP port; open "
                                f"WebSockets on the WebSocket port (ws://HOST:{port}"
                                f"{self.router.settings.path})")
            if route is None:
                raise HttpError(404, "not_found", f"no such endpoint: {request.path[:200]}; "
                                "see docs/http.md")
            if request.method not in route.methods:
                label = "other"
                allowed = ", ".join(route.methods)
                raise HttpError(405, "method_not_allowed", f"{request.method} is not allowed "
                                f"here; use {allowed}", headers=(("Allow", allowed),))
            if route.guarded:
                self._authorize(request)
            status, body, content_type, headers = await route.handler(request)
        except HttpError as exc:
            status, body, content_type, headers = exc.status, exc.body(), JSON, exc.headers
        except BackplaneUnavailable as exc:
            failure = ops.unavailable(exc)
            status, body, content_type, headers = 503, failure.body(), JSON, ()
        except Exception:
            self.router.metrics.handler_errors += 1
            event("http handler failed", logging.ERROR, exc_info=True,
                  method=request.method, path=label)
            status, content_type, headers = 500, JSON, ()
            body = _encode({"error": ErrorCode.INTERNAL, "message": "the server failed to "
                            "answer this request; it is logged, retry later"})
        self.requests[(label, status)] += 1
        keep_alive = request.keep_alive and not self.router.draining
        return response(status, body, content_type, keep_alive=keep_alive, headers=headers,
                        head_only=request.method == "HEAD"), keep_alive

    def refused(self, error: HttpError, path: str | None = None) -> bytes:
        """The answer to a request that could not be read (it closes the connection);
        `path`: its head's, when that much arrived."""
        self.count(path, error.status)
        return response(error.status, error.body(), keep_alive=False, headers=error.headers)

    def count(self, path: str | None, status: int) -> None:
        """Tally an answer (or a request abandoned at `status`) under its route."""
        self.requests[(path if path in self.routes else "other", status)] += 1

    def _authorize(self, request: Request) -> None:
        self._check_key(request.headers)

    def vouch(self, head: ws.RequestHead) -> None:
        """Before a body longer than max_message_bytes is read (only /api/batch may have
        one): the API key must be right, or the answer is 401 and the connection closes
        without reading the body."""
        self._check_key(head.headers, close=True)

    def _check_key(self, headers: Mapping[str, str], close: bool = False) -> None:
        key = self.router.settings.api_key
        if not key:
            raise HttpError(401, "unauthorized", "this server has no api_key configured, so "
                            "/api/ is closed; set api_key (ROOMCAST_API_KEY) to use it",
                            headers=_CHALLENGE, close=close)
        scheme, _, given = headers.get("authorization", "").partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            raise HttpError(401, "unauthorized", "send the API key as "
                            "'Authorization: Bearer <api_key>'", headers=_CHALLENGE,
                            close=close)
        # Digests of equal length: the comparison takes the same time for any wrong key.
        if key != self._key:
            self._key, self._key_digest = key, _digest(key)
        if not hmac.compare_digest(_digest(given), self._key_digest):
            raise HttpError(401, "unauthorized", "the API key is wrong", headers=_CHALLENGE,
                            close=close)

    def parser(self) -> RequestParser:
        """A request parser for one connection, with this endpoint's limits: a body of
        max_message_bytes (http_max_batch_bytes for /api/batch with the right API key, so
        that 1000 commands fit), a head of http_max_head_bytes."""
        settings = self.router.settings
        larger = max(settings.max_message_bytes, settings.http_max_batch_bytes)
        return RequestParser(settings.max_message_bytes, {"/api/batch": larger}, self.vouch,
                             settings.http_max_head_bytes)

    def _body_route(self, kind: type[Any], method: str, has_body: bool = True) -> Handler:
        """A route that decodes its body into `kind` and runs the batch method `method`."""
        operation = ops.METHODS[method][1]

        async def handler(request: Request) -> Reply:
            params = decode(kind, request.body) if has_body else kind()
            return _ok(await operation(self.router, params))

        return handler

    # ------------------------------------------------------------ health and metrics
    async def healthz(self, request: Request) -> Reply:
        return 200, b'{"status":"ok"}', JSON, ()

    async def readyz(self, request: Request) -> Reply:
        router = self.router
        if router.draining:
            return 503, b'{"status":"draining"}', JSON, ()
        if not router.ready:
            return 503, b'{"status":"backplane_unavailable"}', JSON, ()
        return 200, b'{"status":"ready"}', JSON, ()

    async def metrics(self, request: Request) -> Reply:
        return 200, render(self.registry), METRICS_CONTENT_TYPE, ()

    async def where(self, request: Request) -> Reply:
        """Where the WebSocket listener is, so the demo page needs no guessing."""
        return _ok({"ws_port": self.router.ws_port, "ws_path": self.router.settings.path})

    async def static(self, request: Request) -> Reply:
        name, content_type = _STATIC[request.path]
        resource = resources.files("roomcast") / "static" / name
        try:
            body = await trio.to_thread.run_sync(resource.read_bytes)
        except OSError:
            raise HttpError(404, "not_found", f"{name} is not installed with this roomcast "
                            "package; reinstall it (pip install roomcast)") from None
        return 200, body, content_type, (("Cache-Control", "no-cache"),)

    # ------------------------------------------------------------ the server API
    async def publish(self, request: Request) -> Reply:
        return 200, await ops.publish(self.router, decode(PublishBody, request.body)), JSON, ()

    async def batch(self, request: Request) -> Reply:
        return 200, await ops.run_batch(self.router, request.body), JSON, ()

    async def presence(self, request: Request) -> Reply:
        return _ok(await ops.presence(self.router, RoomQuery(_query_room(request))))

    async def history(self, request: Request) -> Reply:
        room = _query_room(request)
        since = _query_int(request, "since", 0, None)
        limit = _query_int(request, "limit", 1, 1000)
        query = HistoryQuery(room, since, 100 if limit is None else limit)
        return 200, await ops.history(self.router, query), JSON, ()


def _ok(result: Any) -> Reply:
    return 200, result if isinstance(result, bytes) else _encode(result), JSON, ()


def _query_room(request: Request) -> str:
    room = request.query().get("room")
    if room is None:
        raise bad_request("the query parameter room is missing; add ?room=<room name>")
    check_room(room)
    return room


def _query_int(request: Request, name: str, low: int, high: int | None) -> int | None:
    raw = request.query().get(name, "").strip()
    if not raw:
        return None
    span = f"{low}..{high}" if high is not None else f"{low} or more"
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be a whole number ({span}), got {raw[:32]!r}") from None
    if value < low or (high is not None and value > high):
        raise bad_request(f"{name} must be {span}, got {value}")
    return value


_APIS: weakref.WeakKeyDictionary[Router, HttpApi] = weakref.WeakKeyDictionary()


def api_for(router: Router) -> HttpApi:
    """The Router's one HttpApi (made on first use): one tally, one metrics registry."""
    api = _APIS.get(router)
    if api is None:
        api = _APIS[router] = HttpApi(router)
    return api
