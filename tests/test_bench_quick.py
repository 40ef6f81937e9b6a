"""The benchmark suite keeps working: `python -m bench --quick` writes every figure with numbers.

Only the shape of the results is checked, never a timing (the machine is shared and noisy).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests import pg

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {
    "ingest": ["ingest: reports/s", "ingest: latency p50", "ingest: latency p99"],
    "fanout": ["fanout: last screen p50", "fanout: last screen p99"],
    "timers": ["timers: lateness p50", "timers: lateness p99", "timers: lateness max", "timers: server RSS"],
    "startup": ["startup: province"],
    "queries": ["queries: escalations p99", "queries: stats p99"],
    "geofence": ["geofence: points/s", "geofence: single point p99"],
}


@pytest.mark.bench
def test_quick_suite_writes_every_figure_with_numbers() -> None:
    if pg.Server.from_env().unreachable():
        pytest.skip("the queries benchmark needs PostgreSQL")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((ROOT / "bench" / "results" / "latest.json").read_text(encoding="utf-8"))
    names = [f["name"] for f in figures]
    assert not [n for n in names if n.endswith(": failed")], done.stdout[-3000:] + done.stderr[-3000:]
    for prefixes in EXPECTED.values():
        for prefix in prefixes:
            assert any(n.startswith(prefix) for n in names), (prefix, names)
    for f in figures:
        assert isinstance(f["value"], (int, float)) and math.isfinite(f["value"]), f
        if f["baseline_name"]:
            assert isinstance(f["baseline"], (int, float)) and math.isfinite(f["baseline"]), f
            assert f["ratio"] is not None, f
        assert f["met"] in (True, False, None), f
