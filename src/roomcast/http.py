"""The HTTP side: health, readiness, metrics, the server API and the demo page (§8).

A Starlette app on hypercorn's trio worker, inside the server's own `trio.run`. Every
`/api/` call goes through a Router method (never to the backplane or the routing core
directly), so the HTTP and WebSocket sides can never disagree. Bad input always gets a
4xx with a message saying how to fix it.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from typing import Annotated, Any, TypeVar

import msgspec
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from roomcast import protocol as p
from roomcast.backplane import BackplaneUnavailable
from roomcast.codes import CloseCode, ErrorCode, application_close_code
from roomcast.errors import RoomcastError
from roomcast.log import event
from roomcast.metrics_export import registry_for, render
from roomcast.router import Router

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_BROADCAST_ROOMS = 1000
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/roomcast.js": ("roomcast.js", "text/javascript; charset=utf-8"),
}

Endpoint = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


# ---------------------------------------------------------------- request bodies
class PublishBody(msgspec.Struct):
    """POST /api/publish"""

    room: str
    data: Any
    event: str | None = None
    idempotency_key: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class BroadcastBody(msgspec.Struct):
    """POST /api/broadcast"""

    rooms: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_BROADCAST_ROOMS)]
    data: Any
    event: str | None = None


class DisconnectBody(msgspec.Struct):
    """POST /api/disconnect"""

    user_id: Annotated[str, msgspec.Meta(min_length=1)]
    code: int = CloseCode.NORMAL
    reason: str | None = None


class RevokeBody(msgspec.Struct):
    """POST /api/revoke; `expires_at` is unix seconds or an ISO 8601 time."""

    jti: Annotated[str, msgspec.Meta(min_length=1)]
    expires_at: float | str | None = None


_EXAMPLES: dict[type[Any], str] = {
    PublishBody: '{"room": "project:12", "event": "task.created", "data": {"task_id": 7}}',
    BroadcastBody: '{"rooms": ["project:12", "project:13"], "data": {"text": "hi"}}',
    DisconnectBody: '{"user_id": "alice", "code": 4403, "reason": "account disabled"}',
    RevokeBody: '{"jti": "token-id", "expires_at": 1767225600}',
}


class ApiError(RoomcastError):
    """An answer other than success: HTTP status, error code and a helpful message."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def response(self) -> Response:
        return json_response({"error": self.code, "message": self.message}, self.status,
                             self.headers)


def bad_request(message: str) -> ApiError:
    return ApiError(400, ErrorCode.BAD_REQUEST, message)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(p.encode(body), status, headers, media_type="application/json")


def _check_room(room: str, field: str = "room") -> None:
    if not p.valid_room(room):
        raise bad_request(f"{field}: {p.bad_room_message(room)}")


def _unix_time(value: float | str) -> float:
    """Seconds since the epoch from a number or an ISO 8601 text (no zone means UTC)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise bad_request(f"expires_at: {value[:64]!r} is neither unix seconds nor an ISO "
                              "8601 time; send e.g. 1767225600 or \"2026-01-01T00:00:00Z\""
                              ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    if not math.isfinite(value):
        raise bad_request("expires_at must be a finite number of unix seconds")
    return float(value)


class HttpApi:
    """The routes of one Router's HTTP listener; `app` is the ASGI application."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.requests: Counter[tuple[str, int]] = Counter()
        self.registry = registry_for(router, self.requests)
        api = self._api
        routes = [
            Route("/healthz", self._counted("/healthz", self.healthz), methods=["GET"]),
            Route("/readyz", self._counted("/readyz", self.readyz), methods=["GET"]),
            Route("/metrics", self._counted("/metrics", self.metrics), methods=["GET"]),
            Route("/api/publish", api("/api/publish", self.publish), methods=["POST"]),
            Route("/api/broadcast", api("/api/broadcast", self.broadcast), methods=["POST"]),
            Route("/api/disconnect", api("/api/disconnect", self.disconnect), methods=["POST"]),
            Route("/api/revoke", api("/api/revoke", self.revoke), methods=["POST"]),
            Route("/api/presence", api("/api/presence", self.presence), methods=["GET"]),
            Route("/api/history", api("/api/history", self.history), methods=["GET"]),
            Route("/api/stats", api("/api/stats", self.stats), methods=["GET"]),
            Route("/", self._counted("/", self.static), methods=["GET"]),
            Route("/roomcast.js", self._counted("/roomcast.js", self.static), methods=["GET"]),
            Route("/roomcast.json", self._counted("/roomcast.json", self.where),
                  methods=["GET"]),
        ]
        self.app = Starlette(routes=routes,
                             exception_handlers={HTTPException: self._http_exception})

    # ------------------------------------------------------------ plumbing
    def _counted(self, path: str, handler: Endpoint) -> Endpoint:
        """Count the answer, and turn ApiError and any unexpected failure into JSON."""

        async def endpoint(request: Request) -> Response:
            try:
                response = await handler(request)
            except ApiError as exc:
                response = exc.response()
            except ClientDisconnect:
                response = json_response({"error": "client_disconnected", "message": (
                    "the client went away before sending the whole body")}, 400)
            except BackplaneUnavailable as exc:
                response = json_response({"error": ErrorCode.UNAVAILABLE, "message": (
                    f"the cluster backplane is unreachable ({exc}); retry with backoff")}, 503)
            except Exception:
                self.router.metrics.handler_errors += 1
                event("http handler failed", logging.ERROR, exc_info=True,
                      method=request.method, path=path)
                response = json_response({"error": ErrorCode.INTERNAL, "message": (
                    "the server failed to answer this request; it is logged, retry later")}, 500)
            self.requests[(path, response.status_code)] += 1
            return response

        return endpoint

    def _api(self, path: str, handler: Endpoint) -> Endpoint:
        """An /api/ route: needs `Authorization: Bearer <api_key>` first."""

        async def guarded(request: Request) -> Response:
            self._authorize(request)
            return await handler(request)

        return self._counted(path, guarded)

    def _authorize(self, request: Request) -> None:
        key = self.router.settings.api_key
        challenge = {"WWW-Authenticate": 'Bearer realm="roomcast"'}
        if not key:
            raise ApiError(401, "unauthorized", "this server has no api_key configured, so "
                           "/api/ is closed; set api_key (ROOMCAST_API_KEY) to use it",
                           challenge)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "unauthorized", "send the API key as "
                           "'Authorization: Bearer <api_key>'", challenge)
        if not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise ApiError(401, "unauthorized", "the API key is wrong", challenge)

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        """Starlette's own 404/405 answers, in the same JSON shape as ours."""
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            body = {"error": "not_found", "message": f"no such endpoint: {request.url.path}; "
                    "see docs/http.md"}
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            body = {"error": "method_not_allowed",
                    "message": f"{request.method} is not allowed here; use {allowed}"}
        else:
            body = {"error": "http_error", "message": str(exc.detail)}
        self.requests[("other", exc.status_code)] += 1
        return json_response(body, exc.status_code, dict(exc.headers or {}))

    async def _body(self, request: Request, kind: type[T]) -> T:
        """The request body decoded into `kind`, or a 4xx saying what is wrong."""
        limit = self.router.settings.max_message_bytes
        length = request.headers.get("content-length", "")
        too_large = ApiError(413, "too_large", f"the body is larger than {limit} bytes "
                             "(max_message_bytes); send less data")
        if length.isdigit() and int(length) > limit:
            raise too_large
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise too_large
        example = _EXAMPLES.get(kind, "{}")
        if not raw.strip():
            raise bad_request(f"the body is empty; send a JSON object like {example}")
        try:
            return msgspec.json.decode(bytes(raw), type=kind)
        except msgspec.ValidationError as exc:
            raise bad_request(f"{exc}; send a JSON object like {example}") from None
        except msgspec.DecodeError as exc:
            raise bad_request(f"the body is not valid JSON ({exc}); send a JSON object like "
                              f"{example}") from None

    @staticmethod
    def _query_int(request: Request, name: str, low: int, high: int | None) -> int | None:
        raw = request.query_params.get(name, "").strip()
        if not raw:
            return None
        span = f"{low}..{high}" if high is not None else f"{low} or more"
        try:
            value = int(raw)
        except ValueError:
            raise bad_request(f"{name} must be a whole number ({span}), got {raw[:32]!r}"
                              ) from None
        if value < low or (high is not None and value > high):
            raise bad_request(f"{name} must be {span}, got {value}")
        return value

    @staticmethod
    def _query_room(request: Request) -> str:
        room = request.query_params.get("room")
        if room is None:
            raise bad_request("the query parameter room is missing; add ?room=<room name>")
        _check_room(room)
        return room

    # ------------------------------------------------------------ health and metrics
    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        router = self.router
        if router.draining:
            return json_response({"status": "draining"}, 503)
        if not router.ready:
            return json_response({"status": "backplane_unavailable"}, 503)
        return json_response({"status": "ready"})

    async def metrics(self, request: Request) -> Response:
        return Response(render(self.registry), media_type=METRICS_CONTENT_TYPE)

    async def where(self, request: Request) -> Response:
        """Where the WebSocket listener is, so the demo page needs no guessing."""
        return json_response({"ws_port": self.router.ws_port, "ws_path": self.router.settings.path})

    async def static(self, request: Request) -> Response:
        name, content_type = _STATIC[request.url.path]
        resource = resources.files("roomcast") / "static" / name
        try:
            body = await trio.to_thread.run_sync(resource.read_bytes)
        except OSError:
            raise ApiError(404, "not_found", f"{name} is not installed with this roomcast "
                           "package; reinstall it (pip install roomcast)") from None
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------ the server API
    async def publish(self, request: Request) -> Response:
        body = await self._body(request, PublishBody)
        _check_room(body.room)
        offset, duplicate = await self.router.publish_result(
            body.room, body.data, body.event, body.idempotency_key
        )
        return json_response({"offset": offset, "duplicate": duplicate})

    async def broadcast(self, request: Request) -> Response:
        body = await self._body(request, BroadcastBody)
        for i, room in enumerate(body.rooms):
            _check_room(room, f"rooms[{i}]")
        offsets = await self.router.broadcast(body.rooms, body.data, body.event)
        return json_response({"offsets": offsets})

    async def disconnect(self, request: Request) -> Response:
        body = await self._body(request, DisconnectBody)
        if not application_close_code(body.code):
            raise bad_request(f"code must be 1000 or 4000..4999 (see the close codes in "
                              f"docs/protocol.md), got {body.code}")
        reason = body.reason if body.reason is not None else "disconnected by the server"
        if len(reason.encode()) > 120:
            raise bad_request("reason must be at most 120 bytes of UTF-8; shorten it")
        closed = await self.router.disconnect_user(body.user_id, body.code, reason)
        return json_response({"closed": closed})

    async def revoke(self, request: Request) -> Response:
        body = await self._body(request, RevokeBody)
        expires_at = _unix_time(body.expires_at) if body.expires_at is not None else None
        await self.router.revoke(body.jti, expires_at)
        return json_response({"revoked": body.jti})

    async def presence(self, request: Request) -> Response:
        room = self._query_room(request)
        users = await self.router.presence(room)
        return json_response({"room": room, "users": users})

    async def history(self, request: Request) -> Response:
        room = self._query_room(request)
        since = self._query_int(request, "since", 0, None)
        limit = self._query_int(request, "limit", 1, 1000)
        page = await self.router.history(room, since, 100 if limit is None else limit)
        return Response(p.history_body(room, page), media_type="application/json")

    async def stats(self, request: Request) -> Response:
        router = self.router
        m = router.metrics
        out = router.stats()
        out.update(draining=router.draining, ws_port=router.ws_port,
                   http_port=router.http_port, publishes=m.publishes,
                   deliveries=m.deliveries, connections_opened=m.connections_opened)
        out["cluster"] = await router.cluster_stats()
        return json_response(out)


def create_app(router: Router) -> Starlette:
    """The ASGI application for one Router (also usable under another ASGI server)."""
    return HttpApi(router).app


def _hypercorn_config() -> Config:
    config = Config()
    config.accesslog = None
    server_log = logging.getLogger("roomcast.http.server")
    server_log.setLevel(logging.WARNING)  # not hypercorn's "Running on ..." banner
    config.errorlog = server_log
    config.include_server_header = False
    return config


async def serve_http(
    router: Router, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on settings.host:settings.http_port and serve until cancelled; started with
    the port. The socket is bound here, so a busy port fails with a clear OSError."""
    settings = router.settings
    try:
        listeners = await trio.open_tcp_listeners(settings.http_port, host=settings.host)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen for HTTP on {settings.host}:"
                      f"{settings.http_port} ({exc.strerror}); choose another --http-port, "
                      "or 0 to turn HTTP off") from exc
    try:
        config = _hypercorn_config()
        # hypercorn takes listening sockets as fd://N; it gets its own duplicate of each.
        config.bind = [f"fd://{os.dup(listener.socket.fileno())}" for listener in listeners]
        port = listeners[0].socket.getsockname()[1]
        app = create_app(router)
        async with trio.open_nursery() as nursery:
            # Starlette's ASGI signature is looser than hypercorn's precise scope types.
            serve = partial(hypercorn_serve, app, config, mode="asgi")  # type: ignore[arg-type]
            await nursery.start(serve)
            task_status.started(port)
    finally:
        for listener in listeners:
            listener.socket.close()
