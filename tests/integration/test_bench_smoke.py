"""The benchmark harness runs from one command and writes numbers (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run `python -m benchmarks --quick --runs 1 ...` and return its one JSON result."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--runs", "1",
         "--results-dir", str(tmp_path), *args],
        cwd=REPO, capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1, files
    result: dict[str, Any] = json.loads(files[0].read_text())
    return result


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@pytest.mark.slow
def test_a_quick_fanout_run_delivers_every_message_on_each_target(tmp_path: Path) -> None:
    result = _bench(tmp_path, "--scenario", "fanout", "--duration", "1")
    runs = result["runs"]
    assert {(r["target"], r["case"]) for r in runs} == {
        (target, case) for target in ("roomcast", "websockets", "naive_trio", "floor")
        for case in ("200x10/s", "200x50/s")
    }
    for run in runs:
        m = run["metrics"]
        assert "error" not in m, m
        assert m["lost"] == 0
        assert m["acked"] == m["accepted"] == m["published"] > 0
        assert m["delivered"] == m["expected"] == m["published"] * m["subscribers"]
        for key in ("deliveries_per_s", "p50_ms", "p99_ms", "max_ms",
                    "server_us_per_delivery"):
            assert _number(m[key]) and m[key] > 0, key
        # CPU time comes in 10 ms ticks: a light generator may spend none in a 1 s run.
        assert _number(m["gen_cpu_pct"]) and m["gen_cpu_pct"] >= 0


@pytest.mark.slow
def test_a_quick_connect_ramp_subscribes_every_connection(tmp_path: Path) -> None:
    result = _bench(tmp_path, "--scenario", "connect", "--no-peers")
    runs = result["runs"]
    assert [r["case"] for r in runs] == ["200", "1000"]
    for run in runs:
        m = run["metrics"]
        assert "error" not in m, m
        assert m["failed"] == 0
        assert m["subscribed"] == m["connections"]
        assert _number(m["connect_p99_ms"]) and _number(m["rss_per_conn_kib"])
    assert any(t["target"].startswith("1000+ connections") and t["status"] == "PASS"
               for t in result["targets"])
