"""Medians of runs, roomcast/peer ratios, the pass/fail targets, and the printed tables."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import api_bench

# Columns per scenario: (metric, header, format).
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "connect": [("connections", "conns", "d"), ("all_subscribed_s", "all subscribed s", ".2f"),
                ("connections_per_s", "conns/s", ",.0f"),
                ("connect_p50_ms", "connect p50 ms", ".1f"),
                ("connect_p99_ms", "connect p99 ms", ".1f"),
                ("rss_per_conn_kib", "RSS KiB/conn", ".1f"),
                ("server_cpu_ms_per_conn", "srv CPU ms/conn", ".3f"),
                ("failed", "failed", "d"), ("gen_cpu_pct", "gen CPU %", ".0f")],
    "fanout": [("subscribers", "subs", "d"), ("rate", "pub/s", "d"),
               ("deliveries_per_s", "deliveries/s", ",.0f"), ("p50_ms", "p50 ms", ".2f"),
               ("p99_ms", "p99 ms", ".2f"), ("p999_ms", "p99.9 ms", ".2f"),
               ("max_ms", "max ms", ".1f"), ("lost", "lost", "d"),
               ("server_us_per_delivery", "srv µs/deliv", ".2f"),
               ("server_cpu_pct", "srv CPU %", ".0f"), ("gen_cpu_pct", "gen CPU %", ".0f")],
    "maxrate": [("subscribers", "subs", "d"), ("deliveries_per_s", "deliveries/s", ",.0f"),
                ("publishes_per_s", "pub/s", ",.0f"), ("p50_ms", "p50 ms", ".1f"),
                ("p99_ms", "p99 ms", ".1f"), ("lost", "lost", "d"),
                ("server_us_per_delivery", "srv µs/deliv", ".2f"),
                ("server_cpu_pct", "srv CPU %", ".0f"), ("gen_cpu_pct", "gen CPU %", ".0f"),
                ("gen_bound", "gen-bound", "b")],
    "rooms": [("rooms", "rooms", "d"), ("rate", "pub/s", "d"),
              ("publishes_per_s", "acked/s", ",.0f"),
              ("deliveries_per_s", "deliveries/s", ",.0f"), ("p50_ms", "p50 ms", ".2f"),
              ("p99_ms", "p99 ms", ".2f"), ("max_ms", "max ms", ".1f"), ("lost", "lost", "d"),
              ("server_us_per_delivery", "srv µs/deliv", ".2f"),
              ("server_cpu_pct", "srv CPU %", ".0f"), ("gen_cpu_pct", "gen CPU %", ".0f")],
    "reconnect": [("clients", "clients", "d"), ("restart_s", "restart s", ".2f"),
                  ("all_back_from_ready_s", "all back s (from ready)", ".2f"),
                  ("all_back_from_kill_s", "all back s (from kill)", ".2f"),
                  ("not_back", "not back", "d"), ("recovered_true", "recovered", "d"),
                  ("recovered_false", "recovered:false", "d"),
                  ("lost_before_restart", "lost", "d")],
    "slow": [("subscribers", "subs", "d"), ("rate", "pub/s", "d"),
             ("payload_bytes", "payload B", "d"), ("p50_ms", "p50 ms", ".2f"),
             ("p99_ms", "p99 ms", ".2f"), ("p999_ms", "p99.9 ms", ".2f"), ("lost", "lost", "d"),
             ("stalled_close_code", "stalled client closed with", "s")],
    "soak": [("connections", "conns", "d"), ("held_s", "held s", ".0f"),
             ("still_open", "still open", "d"), ("dropped", "dropped", "d"),
             ("pings_min", "pings (min)", "d"), ("pings_expected", "pings expected", "d"),
             ("server_cpu_pct", "srv CPU %", ".1f"), ("rss_mib", "RSS MiB", ".0f")],
    "api": api_bench.COLUMNS,
    "batch": api_bench.COLUMNS,
}

RATIO_METRICS = {
    "connect": ["all_subscribed_s", "rss_per_conn_kib", "server_cpu_ms_per_conn"],
    "fanout": ["p99_ms", "server_us_per_delivery"],
    "maxrate": ["deliveries_per_s", "server_us_per_delivery"],
    "rooms": ["p99_ms", "server_us_per_delivery"],
    "api": api_bench.RATIO_METRICS,
    "batch": api_bench.RATIO_METRICS,
}
# The floor peer (one os.write per delivery) is compared on what it bounds: CPU per delivery
# in the fan-out and deliveries/s at max rate.
FLOOR_RATIO_METRICS = {
    "fanout": ["server_us_per_delivery"],
    "maxrate": ["deliveries_per_s"],
    "rooms": ["server_us_per_delivery"],
}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric: the median of the numbers; any() of flags; the last run's anything else."""
    ok = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"runs": len(runs), "runs_ok": len(ok)}
    if not ok:
        out["error"] = runs[-1].get("error") if runs else "not run"
        return out
    for key in ok[-1]:
        values = [r.get(key) for r in ok]
        numbers = [v for v in values if _is_number(v)]
        if all(isinstance(v, bool) for v in values if v is not None) and any(
                v is not None for v in values):
            out[key] = any(bool(v) for v in values)
        elif numbers:
            m = statistics.median(numbers)
            out[key] = int(m) if all(isinstance(v, int) for v in numbers) and m == int(m) else m
        else:
            out[key] = values[-1]
    return out


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if spec == "b":
        return "yes" if value else "no"
    if spec == "s" or not _is_number(value):
        return str(value)
    if spec == "d":
        return f"{round(value):d}"
    return format(value, spec)


def table(scenario: str, rows: list[tuple[str, str, dict[str, Any]]]) -> str:
    """A fixed-width table: one row per (case, target) with the scenario's columns."""
    cols = COLUMNS[scenario]
    head = ["target"] + [h for _, h, _ in cols]
    body = []
    for _case, target, m in rows:
        if "error" in m and m.get("runs_ok", 0) == 0:
            body.append([target, f"FAILED: {str(m['error']).splitlines()[-1][:80]}"])
            continue
        body.append([target] + [_fmt(m.get(k), f) for k, _, f in cols])
    widths = [max(len(r[i]) if i < len(r) else 0 for r in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                          strict=False)))
             for r in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ratios(summary: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """roomcast / peer for the metrics that compare, per scenario and case (and roomcast /
    floor for the metrics the floor bounds)."""
    out = []
    for key, by_target in summary.items():
        scenario, case = key.split("|", 1)
        mine = by_target.get("roomcast")
        if not mine or scenario not in RATIO_METRICS:
            continue
        for peer in ("websockets", "naive_trio", "floor", "fastapi", "http_floor",
                     "trio_floor"):
            theirs = by_target.get(peer)
            if not theirs:
                continue
            floor = peer == "floor" or (peer == "trio_floor" and scenario == "rooms")
            metrics = FLOOR_RATIO_METRICS if floor else RATIO_METRICS
            for metric in metrics.get(scenario, []):
                a, b = mine.get(metric), theirs.get(metric)
                if _is_number(a) and _is_number(b) and b:
                    out.append({"scenario": scenario, "case": case, "peer": peer,
                                "metric": metric, "roomcast": a, "peer_value": b,
                                "ratio": a / b})
    return out


def _get(summary: dict[str, Any], scenario: str, case: str, target: str = "roomcast"
         ) -> dict[str, Any] | None:
    m = summary.get(f"{scenario}|{case}", {}).get(target)
    if m is None or m.get("runs_ok", 0) == 0:
        return None
    return dict(m)


def targets(summary: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    """Every target, PASS / FAIL / NOT RUN, with the measured value it was judged on."""
    out: list[dict[str, Any]] = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        status = "NOT RUN" if ok is None else ("PASS" if ok else "FAIL")
        out.append({"target": name, "status": status, "measured": detail})

    c1k = _get(summary, "connect", "1000")
    add("connection < 500 ms (p99 connect, 1000-connection ramp)",
        None if c1k is None or c1k.get("connect_p99_ms") is None
        else c1k["connect_p99_ms"] < 500,
        "-" if c1k is None else f"p99 {_fmt(c1k.get('connect_p99_ms'), '.1f')} ms")
    add("1000+ connections (1000-connection ramp, none failed)",
        None if c1k is None else c1k.get("failed") == 0 and c1k.get("subscribed") == 1000,
        "-" if c1k is None else f"{c1k.get('subscribed')} subscribed, {c1k.get('failed')} failed")
    f50 = _get(summary, "fanout", "1000x50/s")
    add("latency < 100 ms (p99, fan-out 1000 x 50/s)",
        None if f50 is None or f50.get("p99_ms") is None else f50["p99_ms"] < 100,
        "-" if f50 is None else f"p99 {_fmt(f50.get('p99_ms'), '.2f')} ms")
    m1k = _get(summary, "maxrate", "1000")
    add("10k messages/s (deliveries/s, max rate, 1000 subscribers)",
        None if m1k is None else m1k["deliveries_per_s"] >= 10_000,
        "-" if m1k is None else f"{m1k['deliveries_per_s']:,.0f} deliveries/s")
    rc = _get(summary, "reconnect", "1000")
    back = None if rc is None else rc.get("all_back_from_ready_s")
    add("reconnection < 2 s (1000 clients all back and resubscribed, from server ready)",
        None if rc is None else back is not None and back < 2,
        "-" if rc is None else f"{_fmt(back, '.2f')} s "
        f"({_fmt(rc.get('all_back_from_kill_s'), '.2f')} s from SIGTERM), "
        f"recovered:false {rc.get('recovered_false')}")
    add("fan-out 1000 x 50/s: p99 <= 20 ms and nothing lost",
        None if f50 is None or f50.get("p99_ms") is None
        else f50["p99_ms"] <= 20 and f50.get("lost") == 0,
        "-" if f50 is None else f"p99 {_fmt(f50.get('p99_ms'), '.2f')} ms, lost {f50.get('lost')}")
    w50 = _get(summary, "fanout", "1000x50/s", "websockets")
    mine = None if f50 is None else f50.get("server_us_per_delivery")
    theirs = None if w50 is None else w50.get("server_us_per_delivery")
    add("server CPU per delivery at 1000 x 50/s <= half the websockets peer's",
        None if not (_is_number(mine) and _is_number(theirs)) else mine <= theirs / 2,
        "-" if not (_is_number(mine) and _is_number(theirs))
        else f"{mine:.2f} vs {theirs:.2f} µs (ratio {mine / theirs:.2f})")
    # Not a target: the same ratio for the floor peer, the cheapest server that writes once
    # per delivery. Above 0.50, writing once per delivery alone costs more than the target
    # allows.
    f50_floor = _get(summary, "fanout", "1000x50/s", "floor")
    floor = None if f50_floor is None else f50_floor.get("server_us_per_delivery")
    if _is_number(floor) and _is_number(theirs) and floor and theirs:
        detail = f"{floor:.2f} vs {theirs:.2f} µs (ratio {floor / theirs:.2f})"
        if _is_number(mine):
            detail += f"; roomcast / floor {mine / floor:.2f}"
        out.append({"target": "floor / websockets, CPU per delivery at 1000 x 50/s (the floor "
                    "peer: one os.write per delivery; not a target)", "status": "INFO",
                    "measured": detail})
    for subs in ("1000", "100"):
        r = _get(summary, "maxrate", subs)
        w = _get(summary, "maxrate", subs, "websockets")
        name = f"max deliveries/s >= 2x the websockets peer ({subs} subscribers)"
        if r is None or w is None:
            add(name, None, "-")
            continue
        ratio = r["deliveries_per_s"] / w["deliveries_per_s"] if w["deliveries_per_s"] else 0
        detail = (f"{r['deliveries_per_s']:,.0f} vs {w['deliveries_per_s']:,.0f} "
                  f"(x{ratio:.2f})")
        if r.get("gen_bound") and ratio < 2:
            detail += "; the generator was saturated, so this is a lower bound"
        add(name, ratio >= 2, detail)
    big = None
    for size in ("19000", "10000"):
        big = _get(summary, "connect", size)
        if big is not None:
            break
    add("<= 12 KiB RSS per idle connection (largest ramp)",
        None if big is None else big["rss_per_conn_kib"] <= 12,
        "-" if big is None else f"{big['rss_per_conn_kib']:.1f} KiB at {big['connections']}")
    c5k = _get(summary, "connect", "5000")
    add("5000 connections subscribed in <= 1.5 s",
        None if c5k is None or c5k.get("all_subscribed_s") is None
        else c5k["all_subscribed_s"] <= 1.5,
        "-" if c5k is None else f"{_fmt(c5k.get('all_subscribed_s'), '.2f')} s")
    soak = _get(summary, "soak", "19000")
    add("19k connections held with heartbeats for 5 minutes (--soak)",
        None if soak is None
        else soak["dropped"] == 0 and soak["still_open"] >= 19000 and soak["held_s"] >= 300,
        "-" if soak is None else f"{soak['still_open']} open after {soak['held_s']:.0f} s, "
        f"{soak['dropped']} dropped, min pings {soak['pings_min']}")
    # One subscriber per room: CPU per delivery is CPU per publish (its delivery and ack).
    rooms = "10000x5000/s"
    mine_r, ws_r, trio_r = (None if m is None else m.get("server_us_per_delivery") for m in (
        _get(summary, "rooms", rooms), _get(summary, "rooms", rooms, "websockets"),
        _get(summary, "rooms", rooms, "trio_floor")))
    both = _is_number(mine_r) and _is_number(ws_r)
    detail = "-" if not both else f"{mine_r:.1f} µs vs websockets {ws_r:.1f} µs"
    if both and _is_number(trio_r):
        detail += f"; the Trio floor (no checks, one write each) needs {trio_r:.1f} µs"
    add("WebSocket publish in 10k rooms <= 40 µs of server CPU and <= the websockets peer's",
        None if not both else mine_r <= 40 and mine_r <= ws_r, detail)
    for name, ok, detail in api_bench.targets(summary, quick):
        add(name, ok, detail)
    if quick:
        for t in out:
            if t["status"] == "NOT RUN":
                t["measured"] = "not at --quick sizes"
    return out
