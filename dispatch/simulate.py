"""`griddispatch simulate`: realistic report traffic against a running server, over HTTP, as the demo logins.

- Arrivals: a Poisson process whose rate follows a daily profile (quiet nights, morning and afternoon peaks,
  local time), drawn by thinning; categories and severities from a mix.
- Cases land in the grids of the demo grid workers. A share is left unanswered at the grid (and some also at
  the community) so their clocks run out and the server escalates them; the rest are accepted and handled
  after realistic delays: resolved on the spot, called up to the community, dispatched to departments
  (吹哨报到) that accept and complete; verification fails now and then (返工); closed cases are rated.
- Deterministic with a seed: the arrival plan and every case's choices come from seeded generators, and the
  simulation visits cases in (time, order) sequence. Against a fake clock (tests) the whole run repeats
  exactly; against a live server only the server's own timing varies.

The simulator only acts through the public API; a refused action (the case moved on meanwhile) is normal
traffic and is counted, not an error.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import httpx
import shapely
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
# Relative report rate per local hour: quiet at night, peaks mid-morning and mid-afternoon.
DAILY_PROFILE = (
    0.15, 0.1, 0.08, 0.08, 0.1, 0.2, 0.45, 0.9, 1.5, 1.9, 2.0, 1.7,
    1.1, 1.2, 1.6, 1.8, 1.7, 1.4, 1.0, 0.8, 0.6, 0.45, 0.3, 0.2,
)  # fmt: skip
CATEGORY_MIX = {
    "sanitation": 0.24,
    "municipal": 0.16,
    "dispute": 0.12,
    "livelihood": 0.1,
    "illegal_building": 0.08,
    "public_security": 0.07,
    "fire_hazard": 0.06,
    "work_safety": 0.05,
    "special_care": 0.05,
    "other": 0.07,
}
SEVERITY_MIX = {"normal": 0.86, "urgent": 0.1, "major": 0.04}
# The lead department of each category in the demo county (fixtures/demo_county.py).
LEAD = {
    "dispute": "justice",
    "public_security": "police",
    "work_safety": "emergency",
    "fire_hazard": "fire",
    "sanitation": "urban",
    "municipal": "urban",
    "illegal_building": "urban",
    "livelihood": "civil",
    "special_care": "civil",
    "emergency": "emergency",
    "other": "urban",
}
DESCRIPTIONS = {
    "sanitation": "楼道垃圾堆积",
    "municipal": "路灯不亮",
    "dispute": "邻里噪音纠纷",
    "livelihood": "独居老人求助",
    "illegal_building": "楼顶违章搭建",
    "public_security": "小区门禁损坏",
    "fire_hazard": "消防通道被占用",
    "work_safety": "工地围挡松动",
    "special_care": "困难家庭探访",
    "other": "其他问题",
}
FINAL = ("closed", "rejected", "merged")


@dataclass(frozen=True)
class SimulationConfig:
    days: float = 1.0
    per_day: float = 40.0  # mean reports per day
    unanswered: float = 0.2  # share nobody answers at the grid, so the clock escalates them
    seed: int = 1
    dispatch_share: float = 0.5  # of cases handled at township/county, share sent to departments
    call_community_share: float = 0.15  # grid workers who pass a case up instead of solving it
    rework_share: float = 0.1  # verifications that fail once (返工)
    rating_share: float = 0.7  # closed cases the supervisor rates
    accept_minutes: float = 12.0  # mean delay before somebody answers
    work_minutes: float = 90.0  # mean time to do the work


@dataclass(frozen=True)
class Arrival:
    at: datetime
    index: int
    category: str
    severity: str
    grid_slot: int  # which demo grid worker's grid
    u: tuple[float, float]  # where inside the grid (unit square, mapped onto the grid by rejection)


def _pick(rng: random.Random, mix: dict[str, float]) -> str:
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def rate_per_hour(config: SimulationConfig, when: datetime) -> float:
    mean = sum(DAILY_PROFILE) / 24
    hour = when.astimezone(LOCAL_TZ).hour
    return config.per_day / 24 * DAILY_PROFILE[hour] / mean


def plan_arrivals(config: SimulationConfig, start: datetime, grid_slots: int = 2) -> list[Arrival]:
    """A non-homogeneous Poisson process by thinning: candidates at the peak rate, kept with probability
    rate(t) / peak. Pure and seeded: the same config and start give the same plan."""
    rng = random.Random(config.seed)
    peak = config.per_day / 24 * max(DAILY_PROFILE) / (sum(DAILY_PROFILE) / 24)
    end = start + timedelta(days=config.days)
    t, out = start, []
    while True:
        t += timedelta(hours=rng.expovariate(peak))
        if t >= end:
            return out
        if rng.random() * peak <= rate_per_hour(config, t):
            out.append(
                Arrival(
                    t,
                    len(out),
                    _pick(rng, CATEGORY_MIX),
                    _pick(rng, SEVERITY_MIX),
                    rng.randrange(grid_slots),
                    (rng.random(), rng.random()),
                )
            )


class Pacer(Protocol):
    """How simulated time passes: a live server's clock, or a test's fake clock."""

    def now(self) -> datetime: ...

    def wait_until(self, when: datetime) -> None: ...


class LivePacer:
    """Follows a running server's clock (GRIDDISPATCH_CLOCK_SPEED = `speed`), read once from /stats."""

    def __init__(self, server_now: datetime, speed: float) -> None:
        self.anchor, self.started, self.speed = server_now, time.monotonic(), speed

    def now(self) -> datetime:
        return self.anchor + timedelta(seconds=(time.monotonic() - self.started) * self.speed)

    def wait_until(self, when: datetime) -> None:
        delay = (when - self.now()).total_seconds() / self.speed
        if delay > 0:
            time.sleep(delay)


@dataclass
class Summary:
    reports: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    final_states: Counter[str] = field(default_factory=Counter)
    escalated_cases: int = 0
    incidents: list[str] = field(default_factory=list)

    def table(self) -> Table:
        t = Table(title="simulation")
        t.add_column("what")
        t.add_column("count", justify="right")
        t.add_row("reports", str(self.reports))
        t.add_row("cases that escalated", str(self.escalated_cases))
        for action, n in sorted(self.actions.items()):
            t.add_row(f"action {action}", str(n))
        for action, n in sorted(self.refused.items()):
            t.add_row(f"refused {action}", str(n))
        for state, n in sorted(self.final_states.items()):
            t.add_row(f"state {state}", str(n))
        return t


@dataclass
class Case:
    id: str
    rng: random.Random
    silent: frozenset[str]  # tiers where nobody answers
    reworked: bool = False
    rated: bool = False


class Simulation:
    def __init__(
        self, config: SimulationConfig, http: httpx.Client, pacer: Pacer, password: str = "demo1234"
    ) -> None:
        self.config, self.http, self.pacer, self.password = config, http, pacer, password
        self.tokens: dict[str, str] = {}
        self.summary = Summary()
        self.queue: list[tuple[datetime, int, str]] = []  # (when, order, case id)
        self.cases: dict[str, Case] = {}
        self._order = 0

    # ------------------------------------------------------------ HTTP

    def _headers(self, user: str) -> dict[str, str]:
        if user not in self.tokens:
            r = self.http.post("/api/v1/auth/token", data={"username": user, "password": self.password})
            r.raise_for_status()
            self.tokens[user] = r.json()["access_token"]
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def get(self, user: str, path: str, **params: Any) -> Any:
        r = self.http.get(path, params=params, headers=self._headers(user))
        r.raise_for_status()
        return r.json()

    def act(self, user: str, case: str, action: str, **body: Any) -> bool:
        r = self.http.post(
            f"/api/v1/incidents/{case}/actions", json={"action": action, **body}, headers=self._headers(user)
        )
        if r.status_code == 200:
            self.summary.actions[action] += 1
            return True
        if r.status_code in (403, 404, 409, 422):
            self.summary.refused[action] += 1
            return False
        r.raise_for_status()
        return False

    # ------------------------------------------------------------ setup

    def grid_workers(self) -> list[tuple[str, str, shapely.Geometry]]:
        """(login, grid code, polygon) of the demo grid workers."""
        found = []
        features = self.get("dispatcher", "/api/v1/grids", level="grid")["features"]
        shapes = {f["properties"]["code"]: shapely.geometry.shape(f["geometry"]) for f in features}
        for user in ("grid", "grid2"):
            unit = self.get(user, "/api/v1/pages/me")["unit"]["code"]
            if unit in shapes:
                found.append((user, unit, shapes[unit]))
        if not found:
            raise RuntimeError("the demo grid workers were not found; simulate needs the demo county")
        return found

    # ------------------------------------------------------------ the loop

    def schedule(self, case: str, when: datetime) -> None:
        self._order += 1
        heapq.heappush(self.queue, (when, self._order, case))

    def delay(self, case: Case, mean_minutes: float) -> timedelta:
        return timedelta(minutes=max(1.0, case.rng.expovariate(1 / mean_minutes)))

    def run(self, console: Console | None = None) -> Summary:
        start = self.pacer.now()
        end = start + timedelta(days=self.config.days)
        workers = self.grid_workers()
        arrivals = plan_arrivals(self.config, start, len(workers))
        self.users = {code: user for user, code, _ in workers}
        pending = list(arrivals)
        total = (end - start).total_seconds()
        console = console or Console()
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[reports]} reports"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            bar = progress.add_task("simulating", total=total, reports=0)
            while pending or self.queue:
                next_arrival = pending[0].at if pending else None
                next_visit = self.queue[0][0] if self.queue else None
                if next_visit is not None and (next_arrival is None or next_visit < next_arrival):
                    when, _, case_id = heapq.heappop(self.queue)
                    if when > end:
                        continue  # past the simulated period: leave the case where it is
                    self.pacer.wait_until(when)
                    self.visit(self.cases[case_id], when)
                else:
                    arrival = pending.pop(0)
                    when = arrival.at
                    self.pacer.wait_until(when)
                    self.report(arrival, workers)
                elapsed = min(total, (when - start).total_seconds())
                progress.update(bar, completed=elapsed, reports=self.summary.reports)
            progress.update(bar, completed=total)
        self.pacer.wait_until(end)
        self.finish()
        return self.summary

    def report(self, arrival: Arrival, workers: list[tuple[str, str, shapely.Geometry]]) -> None:
        user, _code, shape = workers[arrival.grid_slot]
        lon, lat = _point_in(shape, arrival.u)
        body = {
            "lon": lon,
            "lat": lat,
            "category": arrival.category,
            "severity": arrival.severity,
            "description": DESCRIPTIONS.get(arrival.category, "问题上报"),
            "source": "hotline",
        }
        r = self.http.post(
            "/api/v1/reports",
            json=body,
            headers={
                **self._headers("dispatcher"),
                "Idempotency-Key": f"sim-{self.config.seed}-{arrival.index}",
            },
        )
        r.raise_for_status()
        case_id = r.json()["id"]
        rng = random.Random(f"{self.config.seed}:{arrival.index}")
        silent: set[str] = set()
        if rng.random() < self.config.unanswered:
            silent.add("grid")
            if rng.random() < 0.35:
                silent.add("community")
        self.cases[case_id] = Case(case_id, rng, frozenset(silent))
        self.summary.reports += 1
        self.summary.incidents.append(case_id)
        self.schedule(case_id, arrival.at + self.delay(self.cases[case_id], self.config.accept_minutes))

    def visit(self, case: Case, now: datetime) -> None:
        view = self.get("dispatcher", f"/api/v1/incidents/{case.id}")
        state, tier, cfg = view["state"], view["tier"], self.config
        grid_code = view["grid"]["code"]
        grid_user = self.users.get(grid_code)
        again = now + self.delay(case, cfg.accept_minutes)
        later = now + self.delay(case, cfg.work_minutes)
        if state in FINAL:
            if state == "closed" and not case.rated and case.rng.random() < cfg.rating_share:
                case.rated = True
                rating = case.rng.choices([5, 4, 3, 2, 1], weights=[55, 25, 10, 6, 4])[0]
                self.act("supervisor", case.id, "rate", rating=rating)
            return
        if state == "suspended" or state == "triage":
            return
        if tier in case.silent and state in ("grid_discovery", "community_call"):
            self.schedule(case.id, now + timedelta(hours=1))  # nobody answers; look again after the clock
            return
        if state == "grid_discovery":
            if grid_user is None:
                return self.schedule(case.id, now + timedelta(hours=1))
            if not view["accepted"]:
                if case.rng.random() < cfg.call_community_share:
                    self.act(grid_user, case.id, "call_community")
                    return self.schedule(case.id, again)
                self.act(grid_user, case.id, "accept")
                return self.schedule(case.id, later)
            self.act(grid_user, case.id, "resolve", note="已现场处置")
            return self.schedule(case.id, again)
        if state == "community_call":
            if not view["accepted"]:
                self.act("community", case.id, "accept")
                return self.schedule(case.id, later)
            if case.rng.random() < 0.25:
                self.act("community", case.id, "escalate", note="需要街道协调")
                return self.schedule(case.id, again)
            self.act("community", case.id, "resolve", note="社区已处理")
            return self.schedule(case.id, again)
        if state == "tiered_response":
            who = "township" if tier == "township" else "dispatcher"
            if not view["accepted"]:
                self.act(who, case.id, "accept")
                return self.schedule(case.id, again)
            if case.rng.random() < cfg.dispatch_share:
                lead = f"{view['jurisdiction'][0]['code']}.{LEAD.get(view['category'], 'urban')}"
                self.act(who, case.id, "dispatch", departments={"lead": lead, "co": []})
            else:
                self.act(who, case.id, "resolve", note="已协调处置")
            return self.schedule(case.id, later)
        if state == "coordinated_handling":
            for d in view["departments"]:
                user = "dept_" + d["department"].split(".", 1)[1]
                if d["status"] == "dispatched":
                    self.act(user, case.id, "dept_accept")
                elif d["status"] == "accepted":
                    self.act(user, case.id, "dept_complete", note="已办结")
            return self.schedule(case.id, later)
        if state == "verification":
            if grid_user is None:
                return self.schedule(case.id, now + timedelta(hours=1))
            if not case.reworked and case.rng.random() < cfg.rework_share:
                case.reworked = True
                self.act(grid_user, case.id, "verify_fail", note="现场未整改到位")
            else:
                self.act(grid_user, case.id, "verify_pass")
            return self.schedule(case.id, again)
        self.schedule(case.id, later)

    def finish(self) -> None:
        for case_id in self.summary.incidents:
            view = self.get("dispatcher", f"/api/v1/incidents/{case_id}")
            self.summary.final_states[view["state"]] += 1
            if any(e["reason"] in ("ack_timeout", "resolve_timeout") for e in view.get("escalations", [])):
                self.summary.escalated_cases += 1


def _point_in(shape: shapely.Geometry, u: tuple[float, float]) -> tuple[float, float]:
    """A point of the grid from two uniform numbers: scaled onto the bounds, rejected until inside (the
    retries are derived from `u`, so the point stays deterministic)."""
    minx, miny, maxx, maxy = shape.bounds
    a, b = u
    for i in range(200):
        p = shapely.Point(minx + a * (maxx - minx), miny + b * (maxy - miny))
        if shape.contains(p):
            return p.x, p.y
        a, b = math.modf(a * 7.31 + 0.137 * (i + 1))[0], math.modf(b * 5.17 + 0.291 * (i + 1))[0]
    p = shape.representative_point()
    return p.x, p.y


def run(
    config: SimulationConfig,
    url: str,
    speed: float = 1.0,
    password: str = "demo1234",
    console: Console | None = None,
) -> Summary:
    """Against a live server at `url` whose clock runs at `speed`."""
    with httpx.Client(base_url=url, timeout=30) as http:
        sim = Simulation(config, http, LivePacer(datetime.now().astimezone(), 1.0), password)
        server_now = datetime.fromisoformat(sim.get("supervisor", "/api/v1/stats")["now"])
        sim.pacer = LivePacer(server_now, speed)
        return sim.run(console)
