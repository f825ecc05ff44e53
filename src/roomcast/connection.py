"""The Connection actor: one reader, one writer, one error boundary per WebSocket.

The reader turns frames into Router commands; the writer drains every frame already
queued in the outbox into one `send_all`. Whatever goes wrong in here closes this
connection (4500, logged, counted) and nothing else.
"""

from __future__ import annotations

import logging
import time

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from roomcast import protocol as p
from roomcast.log import event
from roomcast.router import _BATCH_BYTES, Conn, Router
from roomcast.wire import WireStream


async def run_connection(router: Router, conn: Conn, ws: WebSocketConnection, wire: WireStream
                         ) -> None:
    """Serve one admitted connection until either side closes it."""
    wire.on_receive = conn
    conn.wire = wire
    event("connect", user=conn.principal.user_id, remote=conn.remote, conn=conn.id)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_reader, router, conn, ws)
            nursery.start_soon(_writer, router, conn, ws, wire)
            await conn.closing.wait()
            nursery.cancel_scope.cancel()
        _count_unsent(router, conn)
        if not conn.closed_by_peer and not wire.broken:
            with trio.move_on_after(router.settings.handshake_timeout):
                await ws.aclose(conn.close_code or p.NORMAL, conn.close_reason or None)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(router.settings.handshake_timeout):
            await router.disconnect(conn)
        await trio.aclose_forcefully(wire)
        event("close", user=conn.principal.user_id, conn=conn.id, code=conn.close_code,
              reason=conn.close_reason, by="client" if conn.closed_by_peer else "server",
              duration=f"{time.time() - conn.started:.3f}")


async def _reader(router: Router, conn: Conn, ws: WebSocketConnection) -> None:
    """Frames in: text goes to the Router, binary gets an error, a close ends it."""
    limit = router.settings.max_message_bytes
    try:
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed as exc:
                reason = exc.reason
                conn.close(reason.code if reason else p.NORMAL,
                           (reason.reason or "") if reason else "", by_peer=True)
                return
            if isinstance(message, bytes):
                router.binary_frame(conn)
            elif len(message) * 4 > limit and len(message.encode()) > limit:
                # trio-websocket measures text in characters; the limit is in bytes (§6).
                conn.close(p.TOO_BIG, f"frame larger than {limit} bytes")
                return
            else:
                await router.handle(conn, message)
    except Exception:
        _internal(router, conn, "reader")


async def _writer(router: Router, conn: Conn, ws: WebSocketConnection, wire: WireStream
                  ) -> None:
    """Frames out: everything queued goes in one write; a write that stalls aborts."""
    outbox = conn.outbox_receive
    metrics = router.metrics
    try:
        while True:
            batch = [await outbox.receive()]
            size = len(batch[0])
            while size < _BATCH_BYTES:
                try:
                    frame = outbox.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(frame)
                size += len(frame)
            if ws.closed or conn.close_code is not None:
                if conn.tail and not ws.closed:
                    # Finish the half-written frame, so the close frame lands on a boundary.
                    await _write(router, conn, wire, batch[:1])
                return  # never write data after a close has begun
            if not await _write(router, conn, wire, batch):
                return
            metrics.frames_out += len(batch)
            metrics.bytes_out += size
            if not outbox.statistics().current_buffer_used:
                conn.queued = False  # all written: the Router may write directly again
            if conn.sample_at is not None:
                metrics.observe_latency(trio.current_time() - conn.sample_at)
                conn.sample_at = None
    except Exception:
        _internal(router, conn, "writer")


async def _write(router: Router, conn: Conn, wire: WireStream, batch: list[bytes]) -> bool:
    """One shielded write with a deadline; False (and the connection closing) if it failed."""
    with trio.move_on_after(router.settings.write_timeout) as scope:
        scope.shield = True  # a cancelled send_all could leave half a frame
        try:
            await wire.send_all(b"".join(batch))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            conn.close(p.NORMAL, "connection lost", by_peer=True)
            return False
    conn.tail = False
    if scope.cancelled_caught:
        wire.broken = True
        router.metrics.drops["write_timeout"] += len(batch)
        conn.close(p.TOO_SLOW, "too slow: write timed out")
        return False
    return True


def _count_unsent(router: Router, conn: Conn) -> None:
    """Frames still queued when a connection closes are dropped: count them."""
    unsent = conn.outbox_receive.statistics().current_buffer_used
    if unsent:
        router.metrics.drops["closed_with_queue"] += unsent


def _internal(router: Router, conn: Conn, where: str) -> None:
    router.metrics.handler_errors += 1
    event("connection failed", logging.ERROR, exc_info=True, conn=conn.id,
          user=conn.principal.user_id, task=where)
    conn.close(p.INTERNAL_CLOSE, "internal error")
