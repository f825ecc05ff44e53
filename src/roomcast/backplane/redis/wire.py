"""The Redis connection: pipelined RESP3 requests, and pub/sub messages, at the cost of a
write and a wake-up per batch.

Every publish is one script on this connection, so what a request costs besides Redis'
own work is what a publish costs the node. A request here is packed and queued, its caller
parked in FIFO order; a writer task sends what the tasks of one scheduler round queued in
one write, and one reader task parses the replies (with coredis' compiled parser) and wakes
each caller with its reply. No per-request task, event, cancel scope or channel.

Pub/sub messages (RESP3 pushes) are kept in a bounded queue that one consumer takes whole
(`next_pushes`): one wake-up per read, not per message. When the consumer falls
`max_pushes` behind, the reader stops reading and Redis buffers the rest (up to its
`client-output-buffer-limit pubsub`, past which it closes the connection and the session
starts over and catches up from history).

Time-outs are the connection's, not the request's: replies come in order, so a request
that is not answered within its time-out means Redis (or the network) stopped, and every
request behind it is failed with TimeoutError and the connection closed (the backplane's
session then starts over). A cancelled caller leaves its place in the queue; its reply is
read and dropped.
"""

from __future__ import annotations

import ssl
from collections import deque
from typing import Any, cast

import outcome
import trio
from coredis.connection import TCPLocation
from coredis.constants.resp import DataType
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import RedisError
from coredis.parser import NotEnoughData, Parser

from roomcast.transport import RECEIVE_BYTES, read_now, socket_fd, write_now

_PUSH = DataType.PUSH
_ERROR = DataType.ERROR


def pack(command: bytes, args: tuple[Any, ...]) -> bytes:
    """One command in RESP: an array of bulk strings (str as UTF-8, numbers as digits)."""
    out = [b"*%d\r\n$%d\r\n%s\r\n" % (len(args) + 1, len(command), command)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        elif isinstance(arg, float):
            data = b"%.17g" % arg
        else:
            data = bytes(arg)
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Waiter:
    """A request waiting for its reply: the task to wake (None once it gave up)."""

    __slots__ = ("deadline", "task")

    def __init__(self, task: trio.lowlevel.Task | None, deadline: float) -> None:
        self.task = task
        self.deadline = deadline


class RespConnection:
    """A pipelined RESP3 connection: `run` it in a nursery, then `await create_request(...)`
    from any task, `send_command(...)` for (S)SUBSCRIBE and the like, and take pub/sub
    messages with `next_pushes()` from one task; `invalidate()` closes it."""

    watch_interval = 0.25  # seconds between looks at the oldest request, at most
    max_pushes = 10_000  # pub/sub messages held for the consumer before reading pauses

    def __init__(self, location: TCPLocation, *, client_name: str | None = None,
                 username: str | None = None, password: str | None = None, db: int = 0,
                 ssl_context: ssl.SSLContext | None = None,
                 connect_timeout: float | None = None, stream_timeout: float | None = None,
                 **_other: Any) -> None:  # the rest of a coredis URL: pool options
        self.location = location
        self.client_name = client_name
        self._username = username
        self._password = password
        self._db = int(db or 0)
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout or 5.0
        self._timeout = stream_timeout or 5.0
        self._stream: trio.abc.Stream | None = None
        self._fd = -1
        self._waiters: deque[_Waiter] = deque()
        self._unsent: list[bytes] = []  # requests not written yet
        self._writer_parked: trio.lowlevel.Task | None = None  # the writer, while idle
        self._pushes: deque[Any] = deque()  # pub/sub messages not taken yet
        self._consumer: trio.lowlevel.Task | None = None  # waiting in next_pushes
        self._reader_parked: trio.lowlevel.Task | None = None  # waiting for the consumer
        self._scope: trio.CancelScope | None = None
        self._error: BaseException | None = None  # why it closed, for every later request
        self._ready = False  # the handshake is done

    def __repr__(self) -> str:
        return f"RespConnection<{self.location}>"

    # ------------------------------------------------------------ lifetime
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Connect, say HELLO (authenticating), select the database and name the client,
        then read replies until the connection ends. Raises when it could not be set up;
        once started, returns when it ends (requests in flight fail with the reason)."""
        if self._scope is not None:
            raise RuntimeError("a RespConnection runs once; make a new one")
        self._scope = trio.CancelScope()
        try:
            with self._scope:
                if self._error is None:  # else invalidated before it ran
                    await self._open(task_status)
        finally:
            self._fail(RedisConnectionError(f"the connection to Redis at {self.location} "
                                            "closed"))
            if self._stream is not None:
                await trio.aclose_forcefully(self._stream)  # wakes a writer blocked on it
        if not self._ready:
            assert self._error is not None
            raise self._error

    async def _open(self, task_status: trio.TaskStatus[None]) -> None:
        try:
            await self._connect()
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:  # SSLError too
            self._fail(RedisConnectionError(
                f"cannot connect to Redis at {self.location}: {exc or 'timed out'}"))
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._guard, self._reader)
            nursery.start_soon(self._guard, self._writer)
            try:
                await self._handshake()
            except RedisError as exc:
                self._fail(exc)
                return
            except trio.TooSlowError:
                self._fail(RedisConnectionError(
                    f"Redis at {self.location} did not finish the handshake in "
                    f"{self._connect_timeout:g} s"))
                return
            nursery.start_soon(self._watch)
            self._ready = True
            task_status.started()

    async def _guard(self, part: Any) -> None:
        """Run the reader or the writer; its failure closes the connection (as the reason
        every waiting request is given)."""
        try:
            await part()
        except Exception as exc:
            self._fail(exc if isinstance(exc, RedisError) else RedisConnectionError(
                f"the connection to Redis at {self.location} failed: {exc}"))

    def invalidate(self, reason: str | None = None) -> None:
        """Close the connection now: requests in flight fail, later ones too."""
        self._fail(RedisConnectionError(
            reason or f"the connection to Redis at {self.location} was closed"))

    def _fail(self, error: BaseException) -> None:
        """End the connection: every waiting request fails with the first reason given."""
        if self._error is None:
            self._error = error
        error = self._error
        waiters = self._waiters
        while waiters:
            task = waiters.popleft().task
            if task is not None:
                trio.lowlevel.reschedule(task, outcome.Error(error))
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            trio.lowlevel.reschedule(consumer, outcome.Error(error))
        if self._scope is not None:
            self._scope.cancel()

    async def _connect(self) -> None:
        host, port = self.location.host, self.location.port
        with trio.fail_after(self._connect_timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
            if self._ssl is not None:
                tls = trio.SSLStream(stream, self._ssl, server_hostname=host)
                await tls.do_handshake()
                stream = tls
        self._stream = stream
        self._fd = socket_fd(stream)

    async def _handshake(self) -> None:
        hello: list[Any] = [3]
        if self._username or self._password:
            hello += [b"AUTH", self._username or b"default", self._password or b""]
        with trio.fail_after(self._connect_timeout):
            await self.create_request(b"HELLO", *hello)
            if self._db:
                await self.create_request(b"SELECT", self._db)
            if self.client_name:
                await self.create_request(b"CLIENT", b"SETNAME", self.client_name)

    # ------------------------------------------------------------ requests
    async def create_request(self, command: bytes, *args: Any,
                             timeout: float | None = None) -> Any:
        """Send one command and wait for its reply (a Redis error reply is raised)."""
        if self._error is not None:
            raise self._error
        self._send(pack(command, args))  # no checkpoint: its reply cannot come before
        waiter = _Waiter(trio.lowlevel.current_task(),
                         trio.current_time() + (timeout or self._timeout))
        self._waiters.append(waiter)

        def abort(_: Any) -> trio.lowlevel.Abort:
            waiter.task = None  # the reply is still read, and dropped
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def send_command(self, command: bytes, *args: Any) -> None:
        """Send a command whose answer is a push (SUBSCRIBE, SSUBSCRIBE, their UN-)."""
        if self._error is not None:
            raise self._error
        self._send(pack(command, args))

    async def next_pushes(self) -> list[Any]:
        """Every pub/sub message that arrived since the last call (waits for one); raises
        the reason once the connection has closed. One consumer at a time."""
        pushes = self._pushes
        if not pushes:
            if self._error is not None:
                raise self._error

            def abort(_: Any) -> trio.lowlevel.Abort:
                self._consumer = None
                return trio.lowlevel.Abort.SUCCEEDED

            self._consumer = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(abort)
        batch = list(pushes)
        pushes.clear()
        reader, self._reader_parked = self._reader_parked, None
        if reader is not None:
            trio.lowlevel.reschedule(reader)
        return batch

    def _send(self, data: bytes) -> None:
        """Queue a request for the writer, waking it when it sleeps: the requests of one
        scheduler round leave in one write, and Redis answers them in one read."""
        self._unsent.append(data)
        task = self._writer_parked
        if task is not None:
            self._writer_parked = None
            trio.lowlevel.reschedule(task)

    async def _writer(self) -> None:
        """Write what was queued, in order, as one buffer per wake-up."""
        stream, fd = self._stream, self._fd
        assert stream is not None
        unsent = self._unsent

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._writer_parked = None
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            if not unsent:
                self._writer_parked = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(abort)
            data = b"".join(unsent) if len(unsent) > 1 else unsent[0]
            unsent.clear()
            if fd < 0:
                await stream.send_all(data)
                continue
            view = memoryview(data)
            while True:
                view = view[write_now(fd, view):]
                if not view:
                    break
                await trio.lowlevel.wait_writable(fd)

    async def _reader(self) -> None:
        """Parse what arrives: wake each reply's caller, in order; queue pushes for the
        consumer, pausing while it is `max_pushes` behind."""
        stream, fd = self._stream, self._fd
        assert stream is not None
        parser = Parser()
        parse = parser.parse
        waiters = self._waiters
        pushes = self._pushes
        reschedule = trio.lowlevel.reschedule

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._reader_parked = None
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            if fd >= 0:
                await trio.lowlevel.wait_readable(fd)
                data = read_now(fd)
                if data is None:
                    continue
            else:
                data = bytes(await stream.receive_some(RECEIVE_BYTES))
            if not data:
                raise RedisConnectionError(f"Redis at {self.location} closed the connection")
            parser.feed(data)
            while not isinstance(reply := parse(), NotEnoughData):
                kind, value = reply
                if kind is _PUSH:
                    pushes.append(value)
                    continue
                if not waiters:
                    raise RedisConnectionError(
                        f"Redis at {self.location} sent a reply nobody asked for")
                task = waiters.popleft().task
                if task is not None:
                    reschedule(task, outcome.Error(cast(RedisError, value)) if kind is _ERROR
                               else outcome.Value(value))
            if pushes:
                consumer, self._consumer = self._consumer, None
                if consumer is not None:
                    reschedule(consumer)
                if len(pushes) >= self.max_pushes:  # Redis holds the rest meanwhile
                    self._reader_parked = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(abort)

    async def _watch(self) -> None:
        """Close the connection when its oldest request has waited past its time-out."""
        while True:
            now = trio.current_time()
            if self._waiters and self._waiters[0].deadline <= now:
                self._fail(TimeoutError(f"Redis at {self.location} did not answer in time"))
                return
            wake = now + self.watch_interval
            if self._waiters:
                wake = min(wake, self._waiters[0].deadline)
            await trio.sleep_until(wake)


