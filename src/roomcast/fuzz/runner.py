"""Running a fuzzing campaign: hypothesis in a worker thread, the Trio loop driving the
clients, and the `roomcast fuzz` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from functools import partial

import hypothesis
import trio
import trio_websocket
from hypothesis import HealthCheck, Phase, given, settings

from roomcast.fuzz.contract import FuzzFailure
from roomcast.fuzz.examples import Example
from roomcast.fuzz.fuzzer import Fuzzer, FuzzReport
from roomcast.fuzz.strategies import example_strategy
from roomcast.fuzz.target import TargetError, parse_target


def _run_hypothesis(fuzzer: Fuzzer, examples: int, seed: int | None, shrink: bool,
                    clients: int) -> None:
    """Hypothesis drives; every example runs in the Trio loop through fuzzer.execute."""
    phases = tuple(Phase) if shrink else tuple(p for p in Phase if p != Phase.shrink)

    @settings(max_examples=examples, deadline=None, phases=phases, print_blob=False,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(example=example_strategy(clients))
    def fuzz_server(example: Example) -> None:
        fuzzer.execute(example)

    test = hypothesis.seed(seed)(fuzz_server) if seed is not None else fuzz_server
    try:
        test()
    except Exception as exc:  # the failure (shrunk), with hypothesis's notes
        notes = "\n    ".join(getattr(exc, "__notes__", []))
        fuzzer.report.failure = f"{exc}\n    {notes}" if notes else str(exc)


async def fuzz(url: str, jwt_secret: str, *, examples: int = 200, seed: int | None = None,
               clients: int = 3, timeout: float = 5.0, jwt_algorithm: str = "HS256",
               allow_remote: bool = False, shrink: bool = True) -> FuzzReport:
    """Fuzz the server at `url` (tokens signed with `jwt_secret`); returns the report.
    Refuses non-loopback targets unless `allow_remote` (TargetError)."""
    target = parse_target(url, allow_remote)
    fuzzer = Fuzzer(target, jwt_secret, jwt_algorithm=jwt_algorithm, timeout=timeout)
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(fuzzer.control.run)
        except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed,
                trio.TooSlowError, FuzzFailure, ValueError, LookupError, TypeError) as exc:
            fuzzer.report.failure = (
                f"could not start the control clients at {url}: {exc.__cause__ or exc!r}; is "
                "the server running there, and is --jwt-secret its secret?")
        else:
            await trio.to_thread.run_sync(_run_hypothesis, fuzzer, examples, seed, shrink,
                                          clients)
        nursery.cancel_scope.cancel()
    fuzzer.report.seconds = time.monotonic() - started
    return fuzzer.report


def main(argv: Sequence[str] | None = None) -> int:
    """`roomcast fuzz ws://HOST:PORT/ws --jwt-secret S [...]`; exit 0 when nothing was found."""
    parser = argparse.ArgumentParser(
        prog="roomcast fuzz",
        description="Fuzz a server that speaks the roomcast protocol (see docs/fuzzing.md).",
    )
    parser.add_argument("url", help="the WebSocket endpoint, e.g. ws://127.0.0.1:8000/ws")
    parser.add_argument("--jwt-secret", default=os.environ.get("ROOMCAST_JWT_SECRET"),
                        help="the server's HMAC secret (or ROOMCAST_JWT_SECRET)")
    parser.add_argument("--jwt-algorithm", default="HS256", choices=["HS256", "HS384", "HS512"])
    parser.add_argument("--examples", type=int, default=200, help="examples to run (200)")
    parser.add_argument("--seed", type=int, default=None, help="a seed, to repeat a run")
    parser.add_argument("--clients", type=int, default=3, help="fuzz clients per example (3)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds any reply may take before the server counts as stalled")
    parser.add_argument("--no-shrink", action="store_true",
                        help="report the first failure as drawn, without shrinking it")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a target that is not a loopback address (only for servers "
                             "you run: the traffic is deliberately abusive)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.jwt_secret:
        print("roomcast fuzz: --jwt-secret (or ROOMCAST_JWT_SECRET) is required to sign the "
              "clients' tokens", file=sys.stderr)
        return 2
    if args.examples < 1 or args.clients < 1 or args.timeout <= 0:
        print("roomcast fuzz: --examples and --clients must be at least 1, --timeout above 0",
              file=sys.stderr)
        return 2
    try:
        parse_target(args.url, args.allow_remote)
    except TargetError as exc:
        print(f"roomcast fuzz: {exc}", file=sys.stderr)
        return 2
    report = trio.run(partial(
        fuzz, args.url, args.jwt_secret, examples=args.examples, seed=args.seed,
        clients=args.clients, timeout=args.timeout, jwt_algorithm=args.jwt_algorithm,
        allow_remote=args.allow_remote, shrink=not args.no_shrink,
    ))
    print(report.summary())
    return 0 if report.failure is None else 1
