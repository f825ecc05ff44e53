"""`roomcast client URL --token T`: a line-based REPL, or `... tail ROOM` to follow rooms.

Frames go to stdout as JSON lines (the wire's shapes), so the output can be piped into
`jq`; state changes and usage errors go to stderr, prefixed with `#`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
import trio_websocket

from roomcast.client import (
    Backoff,
    Client,
    CloseInfo,
    CommandError,
    ConnectError,
    ConnectionLost,
    Disconnected,
    Message,
    Recovery,
    RequestTimeout,
    Reset,
    State,
    SubscribeResult,
    connect,
)
from roomcast.codes import CLOSE_MEANINGS, CloseCode
from roomcast.errors import RoomcastError

HELP = """commands (one per line):
  sub ROOM [ROOM ...]            subscribe (with presence events)
  unsub ROOM [ROOM ...]          unsubscribe
  pub ROOM JSON [EVENT]          publish JSON data, e.g. pub project:12 {"task_id": 7} task.created
  history ROOM [SINCE] [LIMIT]   messages kept by the server (after SINCE, or the newest LIMIT)
  presence ROOM                  who is in the room
  ping                           round trip to the server
  help                           this text
  quit                           leave (so does end of input)"""


class UsageError(RoomcastError):
    """A line the REPL cannot run; the message says how to write it."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomcast client",
        description="Talk to a roomcast server: an interactive line-based client, or "
                    "`tail ROOM` to print a room's messages as JSON lines.",
        epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", metavar="URL", help="the WebSocket URL, e.g. ws://127.0.0.1:8000/ws")
    parser.add_argument("--token", default=os.environ.get("ROOMCAST_TOKEN"),
                        help="the JWT to connect with (default: $ROOMCAST_TOKEN)")
    parser.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                        help="how long to try for the first connection (default 10)")
    parser.add_argument("mode", nargs="?", choices=["tail"],
                        help="tail: print each message of ROOM as a JSON line until stopped")
    parser.add_argument("rooms", nargs="*", metavar="ROOM", help="the rooms to tail")
    return parser


def emit(frame: dict[str, Any]) -> None:
    """One frame as one JSON line on stdout."""
    print(json.dumps(frame, ensure_ascii=False, separators=(", ", ": ")), flush=True)


def note(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


def _why(close: CloseInfo | None) -> str:
    return f" (close {close.code}{': ' + close.reason if close.reason else ''})" if close else ""


class Progress:
    """Says what the connection does: each state change, and every reconnect attempt with
    its delay (the client changes state only on the first attempt of a series)."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.was_connected = False

    def on_state(self, state: State, close: CloseInfo | None) -> None:
        if state == State.CONNECTED:
            self.was_connected = True
        if state == State.RECONNECTING:
            lost = "connection lost" if self.was_connected else "no connection yet"
            note(f"{lost}{_why(close)}; trying again in {self.delay:.1f} s")
        elif state != State.DISCONNECTED:  # how it ended is said once, by whoever stops
            note(f"{state.value}{_why(close)}")

    def attempt(self, attempt: int, code: int | None, delay: float) -> None:
        """A reconnect delay was chosen; the first of a series is said by on_state."""
        self.delay = delay
        if attempt == 0:
            return
        meanings = {int(k): v for k, v in CLOSE_MEANINGS.items()}
        meanings[CloseCode.ABNORMAL] = "no answer, or the link broke"
        why = meanings.get(code, "") if code is not None else ""
        note(f"still reconnecting: attempt {attempt + 1} in {delay:.1f} s (close {code}"
             f"{': ' + why if why else ''})")


@dataclass(frozen=True, slots=True)
class ReportingBackoff(Backoff):
    """The client's usual delays, each one reported to `progress` as it is chosen."""

    progress: Progress | None = None

    def delay(self, attempt: int, code: int | None = None,
              rand: Callable[[], float] = random.random) -> float:
        chosen = super(ReportingBackoff, self).delay(attempt, code, rand)
        if self.progress is not None:
            self.progress.attempt(attempt, code, chosen)
        return chosen


def subscribed_frame(results: dict[str, SubscribeResult]) -> dict[str, Any]:
    rooms: dict[str, Any] = {}
    for room, r in results.items():
        if r.ok:
            entry: dict[str, Any] = {"ok": True, "offset": r.offset, "epoch": r.epoch}
            if r.recovered is not None:
                entry["recovered"] = r.recovered
        else:
            entry = {"ok": False, "error": r.error}
        rooms[room] = entry
    return {"type": "subscribed", "rooms": rooms}


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{what} must be a whole number, got {text!r}") from None


async def run_line(client: Client, line: str) -> bool:
    """Run one REPL line; False when it asks to quit."""
    command, _, rest = line.strip().partition(" ")
    rest = rest.strip()
    if not command or command.startswith("#"):
        return True
    if command in ("quit", "exit"):
        return False
    if command == "help":
        print(HELP, file=sys.stderr, flush=True)
    elif command in ("sub", "unsub"):
        rooms = shlex.split(rest)
        if not rooms:
            raise UsageError(f"usage: {command} ROOM [ROOM ...]")
        if command == "sub":
            emit(subscribed_frame(await client.subscribe(rooms, presence=True)))
        else:
            await client.unsubscribe(rooms)
            emit({"type": "unsubscribed", "rooms": rooms})
    elif command == "pub":
        room, _, payload = rest.partition(" ")
        if not room or not payload.strip():
            raise UsageError('usage: pub ROOM JSON [EVENT], e.g. pub r1 {"text": "hi"} note')
        try:
            data, end = json.JSONDecoder().raw_decode(payload.strip())
        except ValueError as exc:
            raise UsageError(f"the data is not JSON ({exc}); e.g. pub r1 {{\"text\": \"hi\"}}"
                             ) from None
        event = payload.strip()[end:].strip() or None
        result = await client.publish(room, data, event=event)
        emit({"type": "published", "room": result.room, "offset": result.offset,
              "duplicate": result.duplicate})
    elif command == "history":
        args = rest.split()
        if not 1 <= len(args) <= 3:
            raise UsageError("usage: history ROOM [SINCE] [LIMIT]")
        since = _int(args[1], "SINCE") if len(args) > 1 else None
        limit = _int(args[2], "LIMIT") if len(args) > 2 else None
        page = await client.history(args[0], since=since, limit=limit)
        emit({"type": "history", "room": page.room, "epoch": page.epoch, "offset": page.offset,
              "messages": [m.frame() for m in page.messages]})
    elif command == "presence":
        if len(rest.split()) != 1:
            raise UsageError("usage: presence ROOM")
        users = await client.presence(rest)
        emit({"type": "presence", "room": rest, "users": [
            {"user_id": u.user_id, "connections": u.connections, "info": u.info}
            for u in users]})
    elif command == "ping":
        emit({"type": "pong", "rtt_ms": round(await client.ping() * 1000, 2)})
    else:
        raise UsageError(f"unknown command {command!r}; type `help` for the list")
    return True


def reset_note(reset: Reset) -> str:
    """One line for a replaced stream (or a gap it cannot fill): what the tail lost, and
    that whatever it feeds must reload the room from its own source."""
    missed = f" (missed {reset.missed[0]}-{reset.missed[1]})" if reset.missed else ""
    if reset.epoch_changed:
        return f"reset {reset.room}: new stream {reset.epoch}; reload{missed}"
    return f"reset {reset.room}: stream {reset.epoch} goes on after {reset.offset}; reload{missed}"


async def print_events(client: Client, only_messages: bool = False) -> None:
    """Print what arrives until the client stops."""
    async for event in client.messages():
        if only_messages and not isinstance(event, Message):
            if isinstance(event, Recovery):
                note(f"resumed: {json.dumps(event.frame())}")
            elif isinstance(event, Reset):
                note(reset_note(event))
            continue
        emit(event.frame())


async def interactive(client: Client) -> int:
    """Read commands from stdin until `quit` or end of input."""
    note(f"connected as {(client.connection or {}).get('user_id')}; type `help` for commands")
    status = 0
    async with trio.open_nursery() as nursery:

        async def printer() -> None:
            nonlocal status
            try:
                await print_events(client)
            except Disconnected as exc:
                note(f"stopped: {exc}")
                status = 1
            nursery.cancel_scope.cancel()

        nursery.start_soon(printer)
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                break
            try:
                if not await run_line(client, line):
                    break
            except UsageError as exc:
                note(str(exc))
            except CommandError as exc:
                emit({"type": "error", "code": exc.code, "message": exc.message})
            except (ConnectionLost, RequestTimeout) as exc:
                note(f"{exc}; try again")
            except Disconnected as exc:
                note(f"stopped: {exc}")
                status = 1
                break
        nursery.cancel_scope.cancel()
    return status


async def tail(client: Client, rooms: list[str]) -> int:
    """Subscribe and print every message as a JSON line until interrupted."""
    results = await client.subscribe(rooms)
    refused = {room: r.error for room, r in results.items() if not r.ok}
    if refused:
        note("cannot tail " + ", ".join(f"{room} ({why})" for room, why in refused.items()))
        return 1
    note("tailing " + ", ".join(f"{room} from offset {r.offset}" for room, r in results.items()))
    try:
        await print_events(client, only_messages=True)
    except Disconnected as exc:
        note(f"stopped: {exc}")
        return 1
    return 0


async def session(args: argparse.Namespace) -> int:
    """Connect, then run the REPL or tail until done."""
    progress = Progress()
    async with connect(args.url, args.token, wait=args.wait, on_state=progress.on_state,
                       backoff=ReportingBackoff(progress=progress)) as client:
        if args.mode == "tail":
            return await tail(client, args.rooms)
        return await interactive(client)


async def amain(args: argparse.Namespace) -> int:
    """Run the session; every way it can fail becomes one line and exit status 1."""
    problems: list[str] = []
    try:
        return await session(args)
    except* trio_websocket.ConnectionRejected as group:
        status = _leaves(group)[0].status_code
        problems.append(refused_http(args.url, status))
    except* Disconnected as group:
        problems.append(explain_stop(args.url, _leaves(group)[0]))
    except* ConnectError as group:
        problems.append(f"{_leaves(group)[0]}; is the server running (./scripts/serve-dev), "
                        "and is the URL's port its WebSocket port? (--wait SECONDS tries "
                        "longer)")
    # The first is the cause: a refused handshake also stops the client (a Disconnected).
    note(problems[0])
    return 1


def _leaves(group: BaseExceptionGroup[Any]) -> list[Any]:
    leaves: list[Any] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


def refused_http(url: str, status: int) -> str:
    """A plain HTTP answer to the handshake: most often roomcast's HTTP port, not its
    WebSocket port, or a wrong path."""
    return (f"{url} answered HTTP {status}, not a WebSocket handshake: is that roomcast's "
            f"HTTP port (--http-port, default 8001) or a wrong path? Use the WebSocket port "
            f"and path, e.g. ws://127.0.0.1:8000/ws")


def explain_stop(url: str, stop: Disconnected) -> str:
    """One line for a connection the server ended for good, with what to do about it."""
    code, reason = stop.code, stop.reason
    status = reason.split()[1] if reason.startswith("HTTP ") and len(reason.split()) > 1 else ""
    if code in (CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN) and status.isdigit():
        return refused_http(url, int(status))
    head = f"the server refused the connection ({code}: {reason})"
    if code == CloseCode.UNAUTHORIZED:
        return (f"{head}: use the token `roomcast serve --dev` prints, or mint one with "
                "`roomcast token --jwt-secret SECRET --sub NAME` using the server's secret")
    if code == CloseCode.FORBIDDEN:
        return f"{head}: the server does not allow this (origin or path); check the URL"
    return head


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    if not args.token:
        parser.error("give a token: --token JWT (or set ROOMCAST_TOKEN); "
                     "`roomcast token --sub NAME` mints one")
    if args.mode == "tail" and not args.rooms:
        parser.error("tail needs at least one ROOM, e.g. roomcast client URL --token T tail r1")
    if args.mode is None and args.rooms:
        parser.error(f"unexpected {args.rooms[0]!r}: the only mode is `tail ROOM`")
    if not args.url.startswith(("ws://", "wss://")):
        parser.error(f"the URL must start with ws:// or wss://, got {args.url!r}")
    args.token = args.token.strip()
    bad = next((c for c in args.token if c.isspace() or not c.isprintable()
                or not c.isascii()), None)
    if bad is not None:
        print(f"roomcast client: the token holds {bad!r}, which no JWT has: copy it again as "
              "one line (a JWT is three base64url parts joined by dots)", file=sys.stderr)
        return 2
    try:
        return trio.run(amain, args)
    except KeyboardInterrupt:
        return 0
    except BaseExceptionGroup as group:
        if group.split(KeyboardInterrupt)[1] is None:  # only Ctrl-C: stop quietly
            return 0
        raise


if __name__ == "__main__":
    sys.exit(main())
