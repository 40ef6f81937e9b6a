"""KPIs against a small case computed by hand, and the weekly supervisor report generated from a simulated
week (`weekly-report-360102.html`: self-contained HTML, matplotlib charts embedded as PNG)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from api.app import create_app
from dispatch.bootstrap import Container
from dispatch.clock import FakeClock
from dispatch.domain import Command
from dispatch.report import gather, write_report
from dispatch.simulate import Simulation, SimulationConfig
from dispatch.stats import compute_stats
from tests.conftest import Demo, fire_due
from tests.sim_support import FakeClockPacer

PNG = b"\x89PNG\r\n\x1a\n"


def at(clock: FakeClock, start, minute: int) -> None:  # type: ignore[no-untyped-def]
    clock.advance(start + timedelta(minutes=minute) - clock.now())


def test_kpis_match_a_small_case_computed_by_hand(container: Container, demo: Demo, clock: FakeClock) -> None:
    """Four cases reported at t0 in the demo grid, then (minutes after t0):
    E: accepted 5, resolved 15, verified 25 → closed, not rated.
    A: accepted 10, resolved 60, verified 70 → closed, rated 5.
    C: accepted 20 → stays open.
    B: nobody answers: warning at 24, ack_timeout at 30 → community; community accepts 40, resolves 50;
       verification fails 55 (返工); community resolves 62; verified 65 → closed, rated 3.
    By hand: closed 3 (A, B, E); on time 2 (B ran out of time) → 66.67 %; rework 1/3 → 33.33 %;
    satisfaction: ratings 5 and 3 → one of two ≥ 4 → 50 %; first accepts 10, 40, 20, 5 → mean 18.75 min
    (shown 18.8); closures 70, 65, 25 → mean 53.33 min (53.3); tiers: grid reached by 4, left upwards by 1
    (B) → 25 %; community reached by 1, left by 0 → 0 %; township and county never reached."""
    c, t0 = container, clock.now()
    dispatcher, grid, community, supervisor = (
        demo.actor(n) for n in ("dispatcher", "grid", "community", "supervisor")
    )

    def act(case: str, who, action: str, **kw) -> None:  # type: ignore[no-untyped-def]
        c.service.act(case, Command(action, **kw), who)

    a = c.service.submit_report(demo.report(), dispatcher)["id"]
    b = c.service.submit_report(demo.report(), dispatcher)["id"]
    cc = c.service.submit_report(demo.report(category="municipal"), dispatcher)["id"]
    e = c.service.submit_report(demo.report(), dispatcher)["id"]
    at(clock, t0, 5)
    act(e, grid, "accept")
    at(clock, t0, 10)
    act(a, grid, "accept")
    at(clock, t0, 15)
    act(e, grid, "resolve")
    at(clock, t0, 20)
    act(cc, grid, "accept")
    at(clock, t0, 24)
    fire_due(c)
    at(clock, t0, 25)
    act(e, grid, "verify_pass")
    at(clock, t0, 30)
    fire_due(c)
    at(clock, t0, 40)
    act(b, community, "accept")
    at(clock, t0, 50)
    act(b, community, "resolve")
    at(clock, t0, 55)
    act(b, grid, "verify_fail", note="未整改到位")
    at(clock, t0, 60)
    act(a, grid, "resolve")
    at(clock, t0, 62)
    act(b, community, "resolve")
    at(clock, t0, 65)
    act(b, grid, "verify_pass")
    at(clock, t0, 70)
    act(a, grid, "verify_pass")
    act(a, supervisor, "rate", rating=5)
    act(b, supervisor, "rate", rating=3)
    at(clock, t0, 80)

    data = gather(c, "360102")
    k = data["kpis"]
    assert (k["reports"], k["closed"], k["closed_on_time"]) == (4, 3, 2)
    assert k["on_time_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert k["rework_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert k["satisfaction_rate"] == 0.5
    assert k["mean_accept_minutes"] == 18.8
    assert k["mean_resolve_minutes"] == 53.3
    assert k["escalation_by_tier"] == {
        "grid": {"reached": 4, "escalated": 1, "rate": 0.25},
        "community": {"reached": 1, "escalated": 0, "rate": 0.0},
        "township": {"reached": 0, "escalated": 0, "rate": None},
        "county": {"reached": 0, "escalated": 0, "rate": None},
    }
    assert k["by_category"] == {"sanitation": 3, "municipal": 1}
    assert data["open"]["total"] == 1 and data["open"]["by_light"]["green"] == 1
    # The same numbers through GET /stats for a supervisor (one definition, two doors).
    same = compute_stats(c.db, supervisor, clock.now(), "360102", data["period"])["period_kpis"]
    assert same == k
    # Per day (everything happened on local 2026-11-30) and per grid.
    (day,) = [d for d in data["daily"] if d["reports"]]
    assert day == {"date": "2026-11-30", "reports": 4, "closed": 3, "closed_on_time": 2, "escalations": 1}
    assert len(data["daily"]) == 8  # seven days back from 18:20 local touch eight calendar days
    (worst,) = data["worst_grids"]
    assert (worst["grid"], worst["reports"], worst["timed_out"], worst["timeout_rate"]) == (
        demo.grid,
        4,
        1,
        0.25,
    )
    assert worst["on_time_rate"] == pytest.approx(2 / 3, abs=1e-4)


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    container.settings.timer_sweep_seconds = 3600  # the pacer fires deadlines
    with TestClient(create_app(container=container)) as c:
        yield c


def test_weekly_report_from_a_simulated_week(
    client: TestClient, container: Container, clock: FakeClock, tmp_path: Path, backend: str
) -> None:
    config = SimulationConfig(days=7, per_day=10, unanswered=0.25, seed=11)
    summary = Simulation(config, client, FakeClockPacer(container, clock)).run(Console(quiet=True))
    assert summary.reports > 40 and summary.escalated_cases > 0

    path = write_report(container, tmp_path / "weekly-report-360102.html", "360102")
    assert path.name == "weekly-report-360102.html"
    page = path.read_text(encoding="utf-8")
    data = gather(container, "360102")
    k = data["kpis"]
    assert k["reports"] == summary.reports  # the week is exactly the simulated week
    assert k["closed"] > 0 and k["escalation_by_tier"]["grid"]["escalated"] > 0
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 5
    assert all(base64.b64decode(i).startswith(PNG) for i in images)
    for shown in (
        f"{k['on_time_rate'] * 100:.1f}%",
        f"{k['rework_rate'] * 100:.1f}%",
        f"{k['satisfaction_rate'] * 100:.1f}%",
        f"{k['mean_accept_minutes']:g} min",
        f"{k['mean_resolve_minutes']:g} min",
        f"{k['reports']} / {k['closed']}",
        "环境卫生",  # top category by name
        data["worst_grids"][0]["grid"],
    ):
        assert shown in page, shown
