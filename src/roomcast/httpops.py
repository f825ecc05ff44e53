"""The server API's operations (§8, §12, §15): a decoded body in, the answer's JSON out.

Each single endpoint and each `/api/batch` method is one of these, so a batch command
does exactly what its endpoint does. Every operation goes through a Router method (never
to the backplane or the routing core directly), so the HTTP and WebSocket sides cannot
disagree. `run_batch` runs a batch's commands in order; a bad command gets its own error
and the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from roomcast import protocol as p
from roomcast.backplane import BackplaneUnavailable
from roomcast.codes import ErrorCode
from roomcast.httpbodies import (
    BatchBody,
    BroadcastBody,
    DisconnectBody,
    HistoryQuery,
    NoParams,
    PublishBody,
    RevokeBody,
    RoomQuery,
    UserRoomBody,
    check_disconnect,
    check_room,
    decode,
    unix_time,
)
from roomcast.httpwire import HttpError
from roomcast.log import event
from roomcast.router import Router

Operation = Callable[[Router, Any], Awaitable[Any]]
MAX_BATCH_ANSWER_BYTES = 64 * 1024 * 1024  # what one batch's answer may hold
_encode: Final = msgspec.json.Encoder().encode


def unavailable(exc: BaseException) -> HttpError:
    return HttpError(503, ErrorCode.UNAVAILABLE, f"the cluster backplane is unreachable "
                     f"({exc}); nothing was done, retry with backoff")


async def publish(router: Router, body: PublishBody) -> bytes:
    check_room(body.room)
    result = await router.publish_message(body.room, body.data, body.event,
                                          body.idempotency_key)
    return b'{"offset":%d,"epoch":%b,"duplicate":%b}' % (
        result.offset, _encode(result.epoch), b"true" if result.duplicate else b"false")


async def broadcast(router: Router, body: BroadcastBody) -> dict[str, Any]:
    for i, room in enumerate(body.rooms):
        check_room(room, f"rooms[{i}]")
    results = await router.broadcast_messages(body.rooms, body.data, body.event)
    return {"offsets": {room: r.offset for room, r in results.items()},
            "epochs": {room: r.epoch for room, r in results.items()}}


async def disconnect(router: Router, body: DisconnectBody) -> dict[str, Any]:
    reason = check_disconnect(body)
    return {"closed": await router.disconnect_user(body.user_id, body.code, reason)}


async def revoke(router: Router, body: RevokeBody) -> dict[str, Any]:
    expires_at = unix_time(body.expires_at) if body.expires_at is not None else None
    await router.revoke(body.jti, expires_at)
    return {"revoked": body.jti}


async def presence(router: Router, query: RoomQuery) -> dict[str, Any]:
    check_room(query.room)
    return {"room": query.room, "users": await router.presence(query.room)}


async def history(router: Router, query: HistoryQuery) -> bytes:
    check_room(query.room)
    page = await router.history(query.room, query.since, query.limit)
    return p.history_body(query.room, page)


async def stats(router: Router, _params: NoParams) -> dict[str, Any]:
    m = router.metrics
    out = router.stats()
    out.update(draining=router.draining, ws_port=router.ws_port,
               http_port=router.http_port, publishes=m.publishes,
               deliveries=m.deliveries, connections_opened=m.connections_opened)
    out["cluster"] = await router.cluster_stats()
    return out


def _server_side(name: str) -> Operation:
    """§12's subscribe/unsubscribe, through the Router method of that name when this
    server has one."""

    async def operation(router: Router, body: UserRoomBody) -> Any:
        check_room(body.room)
        method = getattr(router, name, None)
        if method is None:
            raise HttpError(501, "not_implemented", f"server-side subscriptions ({name}) "
                            "are not available on this server version")
        return await method(body.user_id, body.room, body.connection_id)

    return operation


# method → (params type, operation); the same names as the single endpoints
METHODS: Final[dict[str, tuple[type[Any], Operation]]] = {
    "publish": (PublishBody, publish),
    "broadcast": (BroadcastBody, broadcast),
    "disconnect": (DisconnectBody, disconnect),
    "revoke": (RevokeBody, revoke),
    "subscribe": (UserRoomBody, _server_side("subscribe_user")),
    "unsubscribe": (UserRoomBody, _server_side("unsubscribe_user")),
    "presence": (RoomQuery, presence),
    "history": (HistoryQuery, history),
    "stats": (NoParams, stats),
}


def _error(code: str, message: str) -> bytes:
    return _encode({"error": {"error": code, "message": message}})


async def _one(router: Router, method: str, params: msgspec.Raw) -> bytes:
    """One batch command's reply: `{"result": ...}` or `{"error": {...}}`."""
    known = METHODS.get(method)
    if known is None:
        return _error(ErrorCode.BAD_REQUEST, f"unknown method {method[:64]!r}; use one of "
                      f"{', '.join(METHODS)}")
    kind, operation = known
    try:
        result = await operation(router, decode(kind, bytes(params)))
    except HttpError as exc:
        return _error(exc.code, exc.message)
    except BackplaneUnavailable as exc:
        failure = unavailable(exc)
        return _error(failure.code, failure.message)
    except Exception:
        router.metrics.handler_errors += 1
        event("http batch command failed", logging.ERROR, exc_info=True, method=method)
        return _error(ErrorCode.INTERNAL, "the server failed to run this command; it is "
                      "logged, retry later")
    return b'{"result":%b}' % (result if isinstance(result, bytes) else _encode(result))


MAX_PUBLISH_RUN = 1000  # publishes to one room sent to the backplane together


async def run_batch(router: Router, raw: bytes) -> bytes:
    """POST /api/batch: every command in order, one reply each (§15). Once the replies
    hold more than MAX_BATCH_ANSWER_BYTES (e.g. many big history pages), the commands
    left are not run: each is answered with an error saying to send it again."""
    batch = decode(BatchBody, raw)
    commands = batch.commands
    replies: list[bytes] = []
    size = 0
    i = 0
    while i < len(commands):
        if size > MAX_BATCH_ANSWER_BYTES:
            replies.append(_error("too_large", f"not run: the answers to commands 0..{i - 1} "
                                  f"already exceed {MAX_BATCH_ANSWER_BYTES} bytes; send this "
                                  "command again in another batch"))
            i += 1
            continue
        run = _publish_run(commands, i)
        if len(run) > 1:  # consecutive publishes to one room: one backplane round trip
            answers = await _publish_group(router, run)
        else:
            answers = [await _one(router, commands[i].method, commands[i].params)]
        for reply in answers:
            size += len(reply)
            replies.append(reply)
        i += len(answers)
    return b'{"replies":[%b]}' % b",".join(replies)


def _publish_run(commands: list[Any], start: int) -> list[PublishBody]:
    """The valid publishes to one room that follow one another from `start` (any command
    that is not one ends the run and is answered on its own)."""
    run: list[PublishBody] = []
    for command in commands[start:start + MAX_PUBLISH_RUN]:
        if command.method != "publish":
            break
        try:
            body = decode(PublishBody, bytes(command.params))
        except HttpError:
            break
        if not p.valid_room(body.room) or (run and body.room != run[0].room):
            break
        run.append(body)
    return run


async def _publish_group(router: Router, run: list[PublishBody]) -> list[bytes]:
    """One reply per publish of the run, as the single endpoint would have answered."""
    try:
        results = await router.publish_messages(run[0].room, [
            (body.data, body.event, body.idempotency_key) for body in run])
    except BackplaneUnavailable as exc:
        failure = unavailable(exc)
        return [_error(failure.code, failure.message)] * len(run)
    return [b'{"result":{"offset":%d,"epoch":%b,"duplicate":%b}}' % (
        r.offset, _encode(r.epoch), b"true" if r.duplicate else b"false") for r in results]

