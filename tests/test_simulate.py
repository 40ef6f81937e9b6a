"""`griddispatch simulate`: Poisson arrivals with a daily profile, deterministic with a seed, and a simulated
day that really escalates the unanswered share and finishes the rest through departments and verification."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from api.app import create_app
from dispatch.bootstrap import Container
from dispatch.clock import FakeClock
from dispatch.simulate import CATEGORY_MIX, LOCAL_TZ, Simulation, SimulationConfig, plan_arrivals
from tests.server import Api, ServerProcess
from tests.sim_support import FakeClockPacer

START = datetime(2026, 11, 30, 0, 0, tzinfo=LOCAL_TZ).astimezone(UTC)  # a Monday, local midnight


def test_the_plan_is_seeded_and_follows_the_daily_profile() -> None:
    config = SimulationConfig(days=28, per_day=60, seed=7)
    plan = plan_arrivals(config, START)
    assert plan == plan_arrivals(config, START)  # same seed, same traffic
    assert plan != plan_arrivals(SimulationConfig(days=28, per_day=60, seed=8), START)
    # About per_day × days arrivals (Poisson: within 4 standard deviations of 1,680).
    assert abs(len(plan) - 1680) < 4 * 1680**0.5
    hours = Counter(a.at.astimezone(LOCAL_TZ).hour for a in plan)
    night = sum(hours[h] for h in (1, 2, 3, 4))
    morning = sum(hours[h] for h in (9, 10, 11, 12))
    assert morning > 8 * night  # the profile: 2.0 at ten in the morning vs 0.08 at three at night
    cats = Counter(a.category for a in plan)
    assert set(cats) <= set(CATEGORY_MIX)
    assert cats.most_common(1)[0][0] == "sanitation"  # the largest share of the mix
    assert all(a.at < b.at for a, b in zip(plan, plan[1:], strict=False))


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    container.settings.timer_sweep_seconds = 3600  # the pacer fires deadlines
    with TestClient(create_app(container=container)) as c:
        yield c


def test_a_simulated_day_escalates_the_unanswered_and_closes_the_rest(
    client: TestClient, container: Container, clock: FakeClock
) -> None:
    config = SimulationConfig(days=1, per_day=30, unanswered=0.3, seed=3)
    out = io.StringIO()
    start = clock.now()
    sim = Simulation(config, client, FakeClockPacer(container, clock))
    summary = sim.run(Console(file=out, force_terminal=False, width=100))
    print(summary.reports, dict(summary.actions), dict(summary.final_states), summary.escalated_cases)
    assert summary.reports == len(plan_arrivals(config, start, 2)) > 10
    assert "simulating" in out.getvalue()  # the progress bar was drawn
    assert summary.escalated_cases >= 1  # the unanswered share ran out of time
    assert summary.actions["accept"] >= 1 and summary.actions["verify_pass"] >= 1
    assert summary.actions["dept_accept"] >= 1  # departments did work
    assert summary.final_states["closed"] >= summary.reports // 3
    with container.db.read() as s:
        from sqlalchemy import func, select

        from dispatch import models as m

        assert s.execute(select(func.count()).select_from(m.Incident)).scalar_one() == summary.reports


@pytest.mark.e2e
def test_the_cli_drives_a_running_server_and_writes_the_weekly_report(
    demo_template: Path, tmp_path: Path
) -> None:
    """`griddispatch simulate` over HTTP against `griddispatch serve` (clock ×3600: an hour a second),
    then `griddispatch report` on the same database."""
    shutil.copy(demo_template, tmp_path / "griddispatch.sqlite3")
    url = f"sqlite:///{tmp_path / 'griddispatch.sqlite3'}"
    server = ServerProcess(tmp_path, database_url=url, clock_speed=3600, timer_sweep_seconds=0.5).start()
    env = {**os.environ, "GRIDDISPATCH_DATA_DIR": str(tmp_path), "GRIDDISPATCH_DATABASE_URL": url}
    try:
        args = ["--url", server.url, "--days", "0.25", "--per-day", "60", "--speed", "3600", "--seed", "5"]
        run = subprocess.run(
            [sys.executable, "-m", "dispatch.cli", "simulate", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "reports" in run.stdout
        made = int(re.search(r"reports\s*│\s*(\d+)", run.stdout).group(1))  # type: ignore[union-attr]
        assert made > 0
        listed = Api(server.url).get("dispatcher", "/incidents", limit=500).json()["items"]
        assert len(listed) == made
        assert {i["source"] for i in listed} == {"hotline"}
    finally:
        server.stop()
    out = tmp_path / "weekly-report-360102.html"
    report = subprocess.run(
        [sys.executable, "-m", "dispatch.cli", "report", "--out", str(out), "--jurisdiction", "360102"],
        env={**env, "GRIDDISPATCH_CLOCK_SPEED": "3600"},  # the server's clock, as its operators would run it
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    page = out.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 5
    assert f"{made} / " in page  # reports / closed card
