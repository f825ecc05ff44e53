"""`roomcast client` as a real child process against an in-process server: the
interactive mode with stdin piped, and `tail ROOM`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from roomcast.cli_client import reset_note
from roomcast.client import Position, Reset
from tests.cluster.conftest import RedisServer, cluster, wait_until
from tests.support import WAIT, make_token, running_server, ws_url

START = 20.0  # a child Python starting on a busy machine
BACK = 15.0  # seconds a node may take to notice Redis is back


class Lines:
    """Reads one of a child's pipes line by line, each read under a time-out."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.seen: list[str] = []

    async def line(self, timeout: float = WAIT) -> str:
        with trio.fail_after(timeout):
            while b"\n" not in self.buffer:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise EOFError(f"the pipe ended; lines so far: {self.seen}")
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        text = line.decode()
        self.seen.append(text)
        return text

    async def frame(self, kind: str | None = None, timeout: float = WAIT) -> dict[str, Any]:
        """The next JSON line (of type `kind`, skipping others)."""
        with trio.fail_after(timeout):
            while True:
                frame: dict[str, Any] = json.loads(await self.line(timeout))
                if kind is None or frame.get("type") == kind:
                    return frame

    async def until(self, text: str, timeout: float = START) -> str:
        with trio.fail_after(timeout):
            while True:
                line = await self.line(timeout)
                if text in line:
                    return line


class Child:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        assert process.stdout is not None and process.stderr is not None
        self.out = Lines(process.stdout)
        self.err = Lines(process.stderr)

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    async def exit_code(self, timeout: float = WAIT) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def roomcast_client(*args: str) -> AsyncIterator[Child]:
    """`python -m roomcast client ARGS` with every pipe ours; killed (by PID) if left."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "roomcast", "client", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        yield Child(process)
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


def token(sub: str = "alice", **claims: Any) -> str:
    return make_token(sub, rooms=["*"], publish=["*"], **claims)


async def test_the_interactive_client_runs_commands_and_prints_frames() -> None:
    async with running_server() as router, roomcast_client(ws_url(router), "--token",
                                                           token()) as child:
        await child.err.until("connected as alice")
        await child.send("sub r1")
        subscribed = await child.out.frame("subscribed", START)
        assert subscribed["rooms"]["r1"]["ok"] is True
        await child.out.frame("joined")  # alice's own presence

        await child.send('pub r1 {"text": "hi there"} note.added')
        # The message and the reply may come in either order.
        got = {f["type"]: f for f in [await child.out.frame(), await child.out.frame()]}
        published, message = got["published"], got["message"]
        assert (published["room"], published["offset"], published["duplicate"]) == (
            "r1", 1, False)
        assert (message["data"], message["event"], message["sender"]) == (
            {"text": "hi there"}, "note.added", "alice")

        await router.publish("r1", {"from": "the server"})
        assert (await child.out.frame("message"))["data"] == {"from": "the server"}

        await child.send("history r1 0 1")
        history = await child.out.frame("history")
        assert [m["data"] for m in history["messages"]] == [{"text": "hi there"}]
        assert history["offset"] == 2

        await child.send("presence r1")
        presence = await child.out.frame("presence")
        assert [u["user_id"] for u in presence["users"]] == ["alice"]

        await child.send("bogus")
        assert "unknown command 'bogus'" in await child.err.until("unknown command")
        await child.send("quit")
        assert await child.exit_code() == 0


async def test_the_interactive_client_prints_an_error_reply() -> None:
    async with running_server() as router, roomcast_client(
        ws_url(router), "--token", make_token("alice", rooms=["*"], publish=["mine"])
    ) as child:
        await child.err.until("connected as alice")
        await child.send('pub theirs {"x": 1}')
        error = await child.out.frame("error", START)
        assert error["code"] == "forbidden"
        child.process.stdin.close()  # type: ignore[union-attr]  # end of input quits
        assert await child.exit_code() == 0


async def test_tail_prints_each_message_as_a_json_line_until_interrupted() -> None:
    async with running_server() as router, roomcast_client(
        ws_url(router), "--token", token(), "tail", "r1"
    ) as child:
        await child.err.until("tailing r1 from offset 0")
        for n in (1, 2, 3):
            await router.publish("r1", {"n": n}, event="counted")
        lines = [await child.out.line() for _ in range(3)]
        frames = [json.loads(line) for line in lines]
        assert [(f["type"], f["offset"], f["data"], f["event"]) for f in frames] == [
            ("message", n, {"n": n}, "counted") for n in (1, 2, 3)]
        child.process.send_signal(signal.SIGINT)
        assert await child.exit_code() == 0


async def test_tail_exits_1_when_the_server_refuses_the_token() -> None:
    async with running_server() as router, roomcast_client(
        ws_url(router), "--token", token(ttl=-10), "tail", "r1"
    ) as child:
        assert "4401" in await child.err.until("refused the connection")
        assert await child.exit_code(START) == 1


async def test_the_client_without_a_token_says_how_to_get_one() -> None:
    async with roomcast_client("ws://127.0.0.1:1/ws", "tail", "r1") as child:
        assert "--token" in await child.err.until("give a token")
        assert await child.exit_code(START) == 2


async def test_tail_says_when_a_rooms_stream_was_reset_and_prints_the_new_stream(
    redis: RedisServer,
) -> None:
    async with cluster(redis, "n1") as (node,), roomcast_client(
        ws_url(node), "--token", token(), "tail", "r1"
    ) as child:
        await child.err.until("tailing r1 from offset 0")
        assert [await node.publish("r1", {"n": n}) for n in (1, 2, 3)] == [1, 2, 3]
        assert [(await child.out.frame("message"))["offset"] for _ in range(3)] == [1, 2, 3]

        await trio.to_thread.run_sync(redis.kill)
        await wait_until(lambda: not node.ready)
        await trio.to_thread.run_sync(redis.start)  # empty: the room's stream is gone
        await wait_until(lambda: node.ready, BACK)
        assert [await node.publish("r1", {"n": n}) for n in (4, 5, 6)] == [1, 2, 3]

        line = await child.err.until("# reset r1")
        assert line.startswith("# reset r1: new stream e-") and line.endswith("; reload"), line
        frames = [await child.out.frame() for _ in range(3)]
        assert [(f["type"], f["offset"], f["data"]) for f in frames] == [
            ("message", offset, {"n": n}) for offset, n in [(1, 4), (2, 5), (3, 6)]]
        child.process.send_signal(signal.SIGINT)
        assert await child.exit_code() == 0


def test_a_reset_note_names_the_new_stream_or_the_gap_and_the_missed_offsets() -> None:
    replaced = Reset("r1", "e-new", 4, missed=(1, 4), previous=Position(9, "e-old"))
    assert reset_note(replaced) == "reset r1: new stream e-new; reload (missed 1-4)"
    gap = Reset("r1", "e-same", 6, missed=(4, 6), previous=Position(3, "e-same"))
    assert reset_note(gap) == "reset r1: stream e-same goes on after 6; reload (missed 4-6)"
