"""`python -m benchmarks` (or `roomcast bench`): run the scenarios, print the tables and
targets, and write the results to benchmarks/results/<timestamp>.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import api_bench, report
from benchmarks.scenarios import (
    FULL,
    QUICK,
    Bench,
    BenchError,
    Sizes,
    connect_ramp,
    fanout,
    many_rooms,
    maxrate,
    reconnect_storm,
    soak,
)
from benchmarks.servers import REPO, ServerError, cores, pin, raise_nofile

SCENARIOS = ("connect", "fanout", "maxrate", "rooms", "reconnect", "slow", *api_bench.SCENARIOS,
             "soak")
DEFAULT = SCENARIOS[:-1]

Case = tuple[str, str, list[tuple[str, Callable[[], dict[str, Any]]]]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roomcast bench", description=__doc__)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, metavar="NAME",
                        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, a few seconds per scenario (a smoke run)")
    parser.add_argument("--runs", type=int, default=3, help="runs per case; medians reported")
    parser.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the websockets and naive trio-websocket peers (and, "
                        "in the fan-out, max-rate and rooms scenarios, the floor peer)")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="publish for this long in the fan-out, max-rate, rooms and "
                        "slow-consumer scenarios (default: 6 s, max rate 4 s; 2 s with --quick)")
    parser.add_argument("--soak", action="store_true",
                        help="add the long scenario: 19k connections held for 5 minutes")
    parser.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results",
                        help="where the JSON results (and server logs) go")
    parser.add_argument("--roomcast-src", type=Path, default=None, metavar="DIR",
                        help="import roomcast from DIR (a patched copy of src/) to measure "
                        "a change before it lands")
    parser.add_argument("--profile", action="store_true",
                        help="record the server with py-spy during each measured window "
                        "(collapsed stacks next to the server logs)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every run's numbers")
    return parser


def plan(names: list[str], s: Sizes, peers: bool, bench: Bench, fd_limit: int) -> list[Case]:
    """The cases to run, each with its targets (or variants) in the order they alternate."""
    everyone = ["roomcast", "websockets", "naive_trio"] if peers else ["roomcast"]
    # The floor (one os.write per delivery) only means something where deliveries dominate
    # (in `rooms` every publish is one delivery and one ack: it bounds CPU per publish, and
    # the Trio floor, the same server on Trio, shows what Trio's scheduling adds to it).
    with_floor = [*everyone, "floor"] if peers else everyone
    cases: list[Case] = []
    for name in names:
        if name == "connect":
            for size in s.connect:
                if size + 200 > fd_limit:
                    print(f"skipping the {size}-connection ramp: the open-files limit is "
                          f"{fd_limit}; raise it (ulimit -Hn) to run it", file=sys.stderr)
                    continue
                who = [t for t in everyone if t == "roomcast" or size <= s.peer_connect_max]
                cases.append(("connect", str(size), [
                    (t, lambda t=t, size=size: connect_ramp(bench, t, size)) for t in who]))
        elif name == "fanout":
            for rate in s.fanout_rates:
                cases.append(("fanout", f"{s.fanout_subs}x{rate}/s", [
                    (t, lambda t=t, rate=rate: fanout(bench, t, s.fanout_subs, rate, s.duration))
                    for t in with_floor]))
        elif name == "maxrate":
            for subs in s.maxrate_subs:
                cases.append(("maxrate", str(subs), [
                    (t, lambda t=t, subs=subs: maxrate(bench, t, subs, s.maxrate_duration))
                    for t in with_floor]))
        elif name == "rooms":
            cases.append(("rooms", f"{s.rooms}x{s.rooms_rate}/s", [
                (t, lambda t=t: many_rooms(bench, t, s.rooms, s.rooms_rate, s.duration))
                for t in ([*with_floor, "trio_floor"] if peers else with_floor)]))
        elif name == "reconnect":
            cases.append(("reconnect", str(s.storm_clients), [
                ("roomcast", lambda: reconnect_storm(bench, s.storm_clients, s.storm_rooms,
                                                     s.storm_messages))]))
        elif name == "slow":
            settings = {"max_pending": s.slow_max_pending}
            cases.append(("slow", f"{s.slow_subs}x{s.slow_rate}/s", [
                (variant, lambda stalled=stalled, settings=settings: fanout(
                    bench, "roomcast", s.slow_subs, s.slow_rate, s.slow_duration,
                    stalled=stalled, settings=settings, label="slow", size=s.slow_size))
                for variant, stalled in (("roomcast", False), ("roomcast+stalled", True))]))
        elif name in api_bench.SCENARIOS:
            cases += api_bench.cases(name, bench, peers, s.duration)
        elif name == "soak":
            cases.append(("soak", str(s.soak_conns), [
                ("roomcast", lambda: soak(bench, s.soak_conns, s.soak_seconds,
                                          s.soak_heartbeat))]))
    return cases


HEADLINE = {
    "connect": ["all_subscribed_s", "connect_p99_ms", "rss_per_conn_kib", "failed"],
    "fanout": ["deliveries_per_s", "p99_ms", "lost", "server_us_per_delivery", "gen_cpu_pct"],
    "maxrate": ["deliveries_per_s", "server_us_per_delivery", "gen_cpu_pct", "lost"],
    "rooms": ["deliveries_per_s", "p99_ms", "lost", "server_us_per_delivery"],
    "reconnect": ["all_back_from_ready_s", "not_back", "recovered_false"],
    "slow": ["p99_ms", "lost", "stalled_close_code"],
    "soak": ["still_open", "dropped", "pings_min"],
    "api": api_bench.HEADLINE,
    "batch": api_bench.HEADLINE,
}


def _headline(scenario: str, m: dict[str, Any]) -> str:
    if "error" in m:
        return "FAILED: " + str(m["error"]).strip().splitlines()[-1][:120]
    parts = []
    for key in HEADLINE[scenario]:
        v = m.get(key)
        parts.append(f"{key}={v:.3g}" if isinstance(v, float) else f"{key}={v}")
    if m.get("server_errors"):
        parts.append(f"server_errors={m['server_errors']}")
    return " ".join(parts)


def _meta(args: argparse.Namespace, bench: Bench, fd_limit: int) -> dict[str, Any]:
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:] if args.argv is None
                                                      else args.argv),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--", "src", "benchmarks")),
        "machine": platform.platform(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "server_core": bench.server_core,
        "generator_cores": bench.gen_cores,
        "open_files_limit": fd_limit,
        "load_average_at_start": os.getloadavg(),
        "runs": args.runs,
        "roomcast_src": str(bench.roomcast_src or REPO / "src"),
        "quick": args.quick,
        "sizes": asdict(bench.sizes),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else None
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    names = list(dict.fromkeys(args.scenario or (list(DEFAULT) + (["soak"] if args.soak else []))))
    sizes = QUICK if args.quick else FULL
    if args.duration is not None:
        sizes = replace(sizes, duration=args.duration, maxrate_duration=args.duration,
                        slow_duration=max(args.duration, sizes.slow_duration))
    fd_limit = raise_nofile()
    server_core, gen_cores = cores()
    pin(0, gen_cores[0])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir: Path = args.results_dir
    bench = Bench(sizes, server_core, gen_cores, results_dir / "logs" / stamp, args.verbose,
                  args.roomcast_src.resolve() if args.roomcast_src else None, args.profile)
    meta = _meta(args, bench, fd_limit)
    cases = plan(names, sizes, args.peers, bench, fd_limit)
    print(f"roomcast benchmarks: {', '.join(names)}; {args.runs} run(s) per case; "
          f"server on core {server_core}, generator on {gen_cores}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    failed = False
    for scenario, case, variants in cases:
        for run in range(1, args.runs + 1):
            for target, fn in variants:
                t0 = time.monotonic()
                try:
                    metrics = fn()
                except (BenchError, ServerError, OSError) as exc:
                    failed = True
                    metrics = {"error": f"{type(exc).__name__}: {exc}"}
                    if args.verbose:
                        traceback.print_exc()
                runs.append({"scenario": scenario, "case": case, "target": target, "run": run,
                             "seconds": time.monotonic() - t0, "metrics": metrics})
                print(f"[{scenario} {case}] {target} run {run}/{args.runs} "
                      f"({time.monotonic() - t0:.1f} s): {_headline(scenario, metrics)}",
                      flush=True)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario, case, variants in cases:
        key = f"{scenario}|{case}"
        summary[key] = {}
        for target, _ in variants:
            mine = [r["metrics"] for r in runs if r["scenario"] == scenario
                    and r["case"] == case and r["target"] == target]
            summary[key][target] = report.median_of(mine)
    ratios = report.ratios(summary)
    verdicts = report.targets(summary, args.quick)
    print(f"\nmedians of {args.runs} run(s) per case; server pinned to core {server_core}, "
          f"generator to {gen_cores}; all times in the generator's clock\n")
    for name in names:
        rows = [(key.split("|", 1)[1], target, m) for key, by in summary.items()
                if key.split("|", 1)[0] == name for target, m in by.items()]
        if rows:
            print(f"== {name} ==")
            print(report.table(name, rows))
            print()
    if ratios:
        print("== roomcast / peer (medians) ==")
        for r in ratios:
            print(f"  {r['scenario']:8} {r['case']:14} {r['metric']:24} vs {r['peer']:10} "
                  f"{r['roomcast']:>12.4g} / {r['peer_value']:<12.4g} = {r['ratio']:.2f}")
        print()
    print("== targets ==")
    for t in verdicts:
        print(f"  {t['status']:7}  {t['target']}: {t['measured']}")
    meta["seconds"] = time.monotonic() - started
    meta["load_average_at_end"] = os.getloadavg()
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{stamp}.json"
    path.write_text(json.dumps({"meta": meta, "runs": runs, "summary": summary,
                                "ratios": ratios, "targets": verdicts}, indent=1, default=str))
    print(f"\nresults: {path}  ({meta['seconds']:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
