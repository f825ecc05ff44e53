"""A connection's mailbox: the bounded queue between the Router and one socket.

The Router hands a connection its frames with `send_nowait`, which never waits: a full
mailbox raises `trio.WouldBlock` (the Router closes that connection with 4409, nobody
else slows down) and a closing one `trio.ClosedResourceError`. The connection's own task
drains it into the socket, many frames per write. Two kinds keep this contract
(docs/architecture.md has the measurements that chose the default):

- `DirectMailbox` (the default): a frame goes straight into the non-blocking socket when
  nothing is queued — no task switch, no copy — and only what the socket does not take
  waits, drained by a writer task that exists only while there is a backlog.
- `ChannelMailbox`: a `trio.open_memory_channel(max_pending)` drained by a writer task
  that lives as long as the connection.

Frames leave either queue only once written, so the rest of a half-written frame always
goes out before a close frame (`unsent`).
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Protocol

import trio

from roomcast import transport
from roomcast.codes import CloseCode
from roomcast.metrics import Metrics

BATCH_BYTES = 256 * 1024  # the most one write joins from the queue


class Owner(Protocol):
    """The connection a mailbox belongs to: where it starts its writer, and how it says
    the connection must end."""

    nursery: trio.Nursery | None

    def close(self, code: int, reason: str, by_peer: bool = False) -> None: ...


class DirectMailbox:
    """Write now when nothing waits; queue (bounded) only what the socket does not take."""

    __slots__ = ("closed", "fd", "max_pending", "metrics", "owner", "pending", "sample_at",
                 "stream", "tail", "write_timeout", "writing")

    def __init__(self, owner: Owner, stream: trio.abc.Stream | None, fd: int, max_pending: int,
                 write_timeout: float, metrics: Metrics) -> None:
        self.owner = owner
        self.stream = stream
        self.fd = fd  # -1: not a socket, every frame goes through the writer
        self.max_pending = max_pending
        self.write_timeout = write_timeout
        self.metrics = metrics
        self.pending: deque[bytes] | None = None  # made on first use: most never need one
        self.tail = False  # pending[0] is the rest of a half-written frame
        self.writing = False  # a writer task is draining `pending`
        self.sample_at: float | None = None  # when the oldest unsampled frame was queued
        self.closed = False

    @property
    def queued(self) -> int:
        """Frames waiting to be written."""
        return len(self.pending) if self.pending else 0

    @property
    def unsent(self) -> bytes:
        """The rest of a half-written frame, which must go out before a close frame."""
        return self.pending[0] if self.tail and self.pending else b""

    def send_nowait(self, frame: bytes) -> bool:
        """Send a ready frame without waiting; True when it is already in the socket."""
        if self.closed:
            raise trio.ClosedResourceError
        pending = self.pending
        if not pending and self.fd >= 0:
            try:
                sent = transport.write_now(self.fd, frame)
            except OSError:
                self.owner.close(CloseCode.ABNORMAL, "connection lost", by_peer=True)
                return False
            if sent == len(frame):
                self.metrics.frames_out += 1
                self.metrics.bytes_out += sent
                return True
            if sent:
                frame = frame[sent:]  # the rest goes first, and before any close frame
                self.tail = True
        if pending is None:
            pending = self.pending = deque()
        if len(pending) >= self.max_pending:
            raise trio.WouldBlock
        pending.append(frame)
        if self.sample_at is None:
            self.sample_at = trio.current_time()
        self.start_writer()
        return False

    def start_writer(self) -> None:
        """Start draining the backlog, once the connection's task runs."""
        nursery = self.owner.nursery
        if self.pending and not self.writing and nursery is not None:
            self.writing = True
            nursery.start_soon(self._drain)

    def seal(self) -> int:
        """Take no more frames; how many queued ones will not be written."""
        self.closed = True
        return self.queued - (1 if self.tail else 0)

    def close(self, code: int, reason: str) -> None:
        """End the connection this mailbox belongs to (the Router's way to close it)."""
        self.owner.close(code, reason)

    async def _drain(self) -> None:
        """Write the backlog as the socket makes room, as many frames per write as fit; no
        progress for write_timeout seconds closes the connection (4409)."""
        pending = self.pending
        assert pending is not None
        try:
            while pending and not self.closed:
                sizes = [len(f) for f in itertools.islice(pending, _batch_length(pending))]
                batch = pending[0] if len(sizes) == 1 else b"".join(
                    itertools.islice(pending, len(sizes)))
                sent = 0
                with trio.move_on_after(self.write_timeout):
                    sent = await transport.write_some(self.stream, self.fd, batch)
                if not sent:
                    self._stuck()
                    return
                self._written(pending, sizes, batch, sent)
        except (trio.BrokenResourceError, OSError):
            self.owner.close(CloseCode.ABNORMAL, "connection lost", by_peer=True)
        finally:
            self.writing = False

    def _written(self, pending: deque[bytes], sizes: list[int], batch: bytes, sent: int) -> None:
        for _ in sizes:
            pending.popleft()
        written = sum(1 for n in itertools.accumulate(sizes) if n <= sent)
        self.tail = sent < len(batch)
        if self.tail:
            pending.appendleft(batch[sent:])
        self.metrics.frames_out += written
        self.metrics.bytes_out += sent
        if self.sample_at is not None and not pending:
            self.metrics.observe_latency(trio.current_time() - self.sample_at)
            self.sample_at = None

    def _stuck(self) -> None:
        """A write made no progress in time: give up on the socket for good."""
        pending = self.pending or deque()
        self.metrics.drops["write_timeout"] += len(pending)
        pending.clear()
        self.tail = False
        self.fd = -1
        self.stream = None  # never write again
        self.owner.close(CloseCode.TOO_SLOW, "too slow: write timed out")

    @property
    def writable(self) -> bool:
        """Whether a close frame may still be written (no write got stuck)."""
        return self.fd >= 0 or self.stream is not None


def _batch_length(pending: deque[bytes]) -> int:
    """How many queued frames the next write joins (at least one)."""
    size = 0
    for n, frame in enumerate(pending, 1):
        size += len(frame)
        if size >= BATCH_BYTES:
            return n
    return len(pending)


class ChannelMailbox:
    """A memory channel and a writer task for the connection's whole life."""

    __slots__ = ("_receive", "_send", "closed", "fd", "metrics", "owner", "rest", "sample_at",
                 "stream", "write_timeout")

    def __init__(self, owner: Owner, stream: trio.abc.Stream | None, fd: int, max_pending: int,
                 write_timeout: float, metrics: Metrics) -> None:
        self.owner = owner
        self.stream = stream
        self.fd = fd
        self.write_timeout = write_timeout
        self.metrics = metrics
        self._send, self._receive = trio.open_memory_channel[bytes](max_pending)
        self.rest = b""  # the unwritten part of the batch being written
        self.sample_at: float | None = None
        self.closed = False

    @property
    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    @property
    def unsent(self) -> bytes:
        return self.rest

    @property
    def writable(self) -> bool:
        return self.fd >= 0 or self.stream is not None

    def send_nowait(self, frame: bytes) -> bool:
        if self.closed:
            raise trio.ClosedResourceError
        self._send.send_nowait(frame)  # trio.WouldBlock when full
        if self.sample_at is None:
            self.sample_at = trio.current_time()
        return False

    def start_writer(self) -> None:
        nursery = self.owner.nursery
        if nursery is not None:
            nursery.start_soon(self._drain)

    def seal(self) -> int:
        self.closed = True
        return self.queued

    def close(self, code: int, reason: str) -> None:
        self.owner.close(code, reason)

    async def _drain(self) -> None:
        """Receive, join what else is waiting, write it all; forever (until cancelled)."""
        try:
            async for frame in self._receive:
                batch = [frame]
                size = len(frame)
                while size < BATCH_BYTES:
                    try:
                        more = self._receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    batch.append(more)
                    size += len(more)
                if not await self._write(b"".join(batch) if len(batch) > 1 else frame):
                    return
                self.metrics.frames_out += len(batch)
                if self.sample_at is not None and not self.queued:
                    self.metrics.observe_latency(trio.current_time() - self.sample_at)
                    self.sample_at = None
        except (trio.BrokenResourceError, OSError):
            self.owner.close(CloseCode.ABNORMAL, "connection lost", by_peer=True)

    async def _write(self, data: bytes) -> bool:
        """Write `data` whole (keeping what is left in `rest` if cancelled); False when a
        write made no progress within write_timeout (the connection is then closed 4409)."""
        self.rest = data
        while self.rest:
            sent = 0
            with trio.move_on_after(self.write_timeout):
                sent = await transport.write_some(self.stream, self.fd, self.rest)
            if not sent:
                self.rest = b""
                self.metrics.drops["write_timeout"] += 1 + self.queued
                self.fd = -1
                self.stream = None
                self.owner.close(CloseCode.TOO_SLOW, "too slow: write timed out")
                return False
            self.metrics.bytes_out += sent
            self.rest = self.rest[sent:]
        return True


Mailbox = DirectMailbox | ChannelMailbox
