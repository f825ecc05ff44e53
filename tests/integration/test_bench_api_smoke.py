"""The `api` and `batch` benchmark scenarios run from one command against roomcast, the
FastAPI peer, the HTTP floor and the Trio floor, and every publish is answered and
delivered (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_api_and_batch_runs_deliver_every_publish(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--runs", "1", "--duration", "1",
         "--scenario", "api", "--scenario", "batch", "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [path] = tmp_path.glob("*.json")
    result = json.loads(path.read_text())
    seen = {(r["scenario"], r["case"], r["target"]) for r in result["runs"]}
    assert seen == {(scenario, case, target)
                    for scenario, case in (("api", "200xmax"), ("api", "200x5000/s"),
                                           ("batch", "200x100/req"))
                    for target in ("roomcast", "fastapi", "http_floor", "trio_floor")}
    for run in result["runs"]:
        m = run["metrics"]
        assert "error" not in m, m
        assert m["publish_errors"] == 0 and m["lost"] == 0, m
        assert m["delivered"] == m["accepted"] > 0
        assert m["answer_p99_ms"] > 0 and m["server_us_per_publish"] > 0
    assert any(t["target"].startswith("POST /api/publish >= 3x") for t in result["targets"])
