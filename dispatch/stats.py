"""KPIs (SPEC §4 `GET /stats`) and the overdue list, computed from the cases a user may see. Read only.

Definitions (the spec names the KPIs, not their formulas; these are ours, stated once here):
- period: `[since, until)`, default the current local day (Asia/Shanghai) on the service clock;
- on-time closure 按期结案率: cases closed in the period that never ran out of time — no `ack_timeout`,
  `resolve_timeout` or `dept_timeout` entry in the escalation log — over all cases closed in the period;
- escalations (today, daily): tier changes upwards in the log, not its 督办/催办 records;
- escalation rate by tier: of the cases reported in the period that were ever handled at a tier, the share
  that left it upwards (timeout or manual escalation);
- rework 返工率: closed cases with at least one failed verification, over closed cases;
- mean time to accept: report → first `accept`/`dept_accept`; to resolve: report → closure;
- satisfaction 满意率: ratings of 4 or 5 over all ratings given to cases closed in the period.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import fmean
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import String, and_, case, cast, func, or_, select, text

from dispatch import models as m
from dispatch.clock import utc
from dispatch.codec import deadline_from_json
from dispatch.db import Database
from dispatch.domain import Actor
from dispatch.engine import light
from dispatch.queries import _scope, log_scope
from dispatch.service import to_domain
from grids.directory import JurisdictionTree

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
FINAL = frozenset({"closed", "rejected", "merged"})
TIMEOUTS = frozenset({"ack_timeout", "resolve_timeout", "dept_timeout"})
CLIMBS = frozenset({"ack_timeout", "resolve_timeout", "manual", "severity"})
TIERS = ("grid", "community", "township", "county")


@dataclass(frozen=True)
class Period:
    since: datetime
    until: datetime

    def holds(self, when: datetime | None) -> bool:
        return when is not None and self.since <= utc(when) < self.until


def local_day(now: datetime, days_back: int = 0) -> Period:
    start = now.astimezone(LOCAL_TZ).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=days_back
    )
    return Period(utc(start), utc(start + timedelta(days=1)))


@dataclass
class Selection:
    incidents: list[m.Incident]
    log: list[m.EscalationEntry]
    first_accept: dict[str, datetime]


def _rows(db: Database, actor: Actor, jurisdiction: str | None) -> Selection:
    stmt = _scope(select(m.Incident), actor)
    if jurisdiction:
        stmt = (
            stmt.where(m.Incident.county == jurisdiction)
            if len(jurisdiction) == 6
            else stmt.where(m.Incident.grid_code.startswith(jurisdiction))
        )
    with db.read() as s:
        incidents = list(s.execute(stmt).scalars())
        ids = select(m.Incident.id).where(m.Incident.id.in_(_scope(select(m.Incident.id), actor)))
        log = list(
            s.execute(
                select(m.EscalationEntry)
                .where(m.EscalationEntry.incident_id.in_(ids))
                .order_by(m.EscalationEntry.id)
            ).scalars()
        )
        wanted = {i.id for i in incidents}
        accepts = s.execute(
            select(m.TimelineEntry.incident_id, m.TimelineEntry.at)
            .where(m.TimelineEntry.action.in_(("accept", "dept_accept")))
            .order_by(m.TimelineEntry.id)
        ).all()
    first_accept: dict[str, datetime] = {}
    for incident_id, at in accepts:
        if incident_id in wanted:
            first_accept.setdefault(incident_id, utc(at))
    return Selection(incidents, [e for e in log if e.incident_id in wanted], first_accept)


def _climbs(e: m.EscalationEntry) -> bool:
    """A tier change upwards (timeout, manual or severity), not a 督办/催办 record or a department event."""
    return e.reason in CLIMBS and e.to_tier != e.from_tier


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _minutes(values: list[float]) -> float | None:
    return round(fmean(values) / 60, 1) if values else None


def _cases(stmt: Any, actor: Actor, jurisdiction: str | None) -> Any:
    """The cases `_rows` selects, as conditions on a statement over `incident`."""
    stmt = _scope(stmt, actor)
    if jurisdiction:
        stmt = (
            stmt.where(m.Incident.county == jurisdiction)
            if len(jurisdiction) == 6
            else stmt.where(m.Incident.grid_code.startswith(jurisdiction))
        )
    return stmt


def _entries(stmt: Any, actor: Actor, jurisdiction: str | None) -> Any:
    """The log entries of those cases (an entry's county is its case's county)."""
    if jurisdiction is None:
        return log_scope(stmt, actor)
    if len(jurisdiction) == 6:
        return log_scope(stmt, actor).where(m.EscalationEntry.county == jurisdiction)
    return stmt.where(m.EscalationEntry.incident_id.in_(_cases(select(m.Incident.id), actor, jurisdiction)))


def _between(column: Any, period: Period) -> Any:
    return and_(column >= period.since, column < period.until)


def _per_day(column: Any, days: list[Period]) -> list[Any]:
    return [func.coalesce(func.sum(case((_between(column, d), 1), else_=0)), 0) for d in days]


# Spelled out (not bound) so PostgreSQL matches it with the partial index of open cases.
_OPEN = text("incident.state NOT IN (" + ", ".join(f"'{s}'" for s in sorted(FINAL)) + ")")


def compute_stats(
    db: Database, actor: Actor, now: datetime, jurisdiction: str | None = None, period: Period | None = None
) -> dict[str, Any]:
    """The KPIs above, counted by the database: only the open cases, the period's closures and first accepts
    come back as rows, so the cost follows the period and the open cases, not the history."""
    period = period or local_day(now)
    today = local_day(now)
    days = [local_day(now, back) for back in range(6, -1, -1)]
    window = Period(min(days[0].since, today.since), max(days[-1].until, today.until))
    i, e, t = m.Incident, m.EscalationEntry, m.TimelineEntry

    def cases(stmt: Any) -> Any:
        return _cases(stmt, actor, jurisdiction)

    first_accept = (
        select(t.at)
        .where(t.incident_id == i.id, t.action.in_(("accept", "dept_accept")))
        .order_by(t.id)
        .limit(1)
        .correlate(i)
        .scalar_subquery()
    )
    in_period = _between(i.created_at, period)
    closed_in_period = and_(i.state == "closed", _between(i.closed_at, period))
    climbs = and_(e.reason.in_(CLIMBS), or_(e.from_tier.is_(None), e.to_tier != e.from_tier))
    with db.read() as s:
        # As text, decoded below with orjson: several times faster than the JSON type's decoder.
        open_rows = s.execute(
            cases(select(i.state, i.tier, cast(i.overdue, String), cast(i.deadlines, String))).where(_OPEN)
        ).all()
        reported = s.execute(
            cases(select(i.id, i.tier, i.category, i.created_at, first_accept.label("accepted_at"))).where(
                in_period
            )
        ).all()
        closures = s.execute(
            cases(select(i.id, i.created_at, i.closed_at, i.rework_count, i.rating)).where(closed_in_period)
        ).all()
        # The log entries of the period's reported and closed cases, read once (by case: an index lookup each).
        involved = cases(select(i.id)).where(or_(in_period, closed_in_period))
        entries = s.execute(
            select(e.incident_id, e.reason, e.from_tier, e.to_tier).where(e.incident_id.in_(involved))
        ).all()
        created_by_day = s.execute(
            cases(select(*_per_day(i.created_at, [*days, today]))).where(_between(i.created_at, window))
        ).one()
        closed_by_day = s.execute(
            cases(select(*_per_day(i.closed_at, [*days, today]))).where(
                i.state == "closed", _between(i.closed_at, window)
            )
        ).one()
        climbs_by_day = s.execute(
            _entries(select(*_per_day(e.at, [*days, today])), actor, jurisdiction).where(
                _between(e.at, window), climbs
            )
        ).one()
        log_today = s.execute(
            _entries(select(func.count()), actor, jurisdiction).where(_between(e.at, today))
        ).scalar_one()

    log_by_case: dict[str, list[Any]] = defaultdict(list)
    for entry in entries:
        log_by_case[entry.incident_id].append(entry)
    timed_out = {c.id for c in closures if any(x.reason in TIMEOUTS for x in log_by_case[c.id])}
    reached: Counter[str] = Counter()
    climbed: Counter[str] = Counter()
    for r in reported:
        mine = log_by_case[r.id]
        reached.update({r.tier} | {x.to_tier for x in mine} | {x.from_tier for x in mine if x.from_tier})
        climbed.update({x.from_tier for x in mine if x.from_tier and _climbs(x)})
    lights: Counter[str] = Counter()
    for _state, _tier, overdue, deadlines in open_rows:
        shape = SimpleNamespace(
            overdue=frozenset(orjson.loads(overdue)),
            deadlines=tuple(deadline_from_json(d) for d in orjson.loads(deadlines)),
        )
        lights[light(shape, now)] += 1  # type: ignore[arg-type]
    on_time = [c for c in closures if c.id not in timed_out]
    rated = [c.rating for c in closures if c.rating is not None]
    return {
        "jurisdiction": jurisdiction or (actor.unit_code[:6] if actor.unit_code else None),
        "now": now.isoformat(),
        "period": {"since": period.since.isoformat(), "until": period.until.isoformat()},
        "today": {
            "reports": int(created_by_day[-1]),
            "escalations": int(climbs_by_day[-1]),
            "log_entries": int(log_today),
            "closed": int(closed_by_day[-1]),
        },
        "open": {
            "total": len(open_rows),
            "by_state": dict(Counter(r.state for r in open_rows)),
            "by_tier": dict(Counter(r.tier for r in open_rows)),
            "by_light": {k: lights.get(k, 0) for k in ("green", "yellow", "red")},
        },
        "period_kpis": {
            "reports": len(reported),
            "closed": len(closures),
            "closed_on_time": len(on_time),
            "on_time_rate": _rate(len(on_time), len(closures)),
            "rework_rate": _rate(sum(c.rework_count > 0 for c in closures), len(closures)),
            "satisfaction_rate": _rate(sum(x >= 4 for x in rated), len(rated)),
            "mean_accept_minutes": _minutes(
                [
                    (utc(r.accepted_at) - utc(r.created_at)).total_seconds()
                    for r in reported
                    if r.accepted_at is not None
                ]
            ),
            "mean_resolve_minutes": _minutes(
                [(utc(c.closed_at) - utc(c.created_at)).total_seconds() for c in closures]
            ),
            "escalation_by_tier": {
                tier: {
                    "reached": reached[tier],
                    "escalated": climbed[tier],
                    "rate": _rate(climbed[tier], reached[tier]),
                }
                for tier in TIERS
            },
            "by_category": dict(Counter(r.category for r in reported)),
        },
        "daily": [
            {
                "date": day.since.astimezone(LOCAL_TZ).date().isoformat(),
                "reports": int(created_by_day[n]),
                "closed": int(closed_by_day[n]),
                "escalations": int(climbs_by_day[n]),
            }
            for n, day in enumerate(days)
        ],
    }


def overdue_cases(
    db: Database,
    actor: Actor,
    now: datetime,
    tree: JurisdictionTree,
    jurisdiction: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Open cases past a deadline (their own or a department's), the latest first."""
    out = []
    for row in _rows(db, actor, jurisdiction).incidents:
        if row.state in FINAL:
            continue
        inc = to_domain(row)
        passed = [d for d in inc.deadlines if d.clock != "supervise" and d.due_at <= now]
        if not passed and not inc.overdue:
            continue
        worst = min(passed, key=lambda d: d.due_at) if passed else None
        unit = inc.unit_at(inc.tier)
        out.append(
            {
                "id": inc.id,
                "category": inc.category,
                "severity": inc.severity,
                "state": inc.state,
                "tier": inc.tier,
                "unit": {"code": unit, "name": tree.name(unit)},
                "clock": worst.clock if worst else sorted(inc.overdue)[0],
                "due_at": worst.due_at.isoformat() if worst else None,
                "late_seconds": round((now - worst.due_at).total_seconds(), 1) if worst else 0.0,
                "light": light(inc, now),
                "departments": [d.department for d in inc.departments],
            }
        )
    out.sort(key=lambda c: c["late_seconds"], reverse=True)
    return out[:limit]


# ---------------------------------------------------------------- weekly report (issue 8; additive)


def daily_kpis(
    db: Database, actor: Actor, period: Period, jurisdiction: str | None = None
) -> list[dict[str, Any]]:
    """Per local day of the period: reports, closures, on-time closures and escalations (timeouts)."""
    sel = _rows(db, actor, jurisdiction)
    timed_out = {e.incident_id for e in sel.log if e.reason in TIMEOUTS}
    out = []
    day = local_day(period.since)
    while day.since < period.until:
        closed = [r for r in sel.incidents if r.state == "closed" and day.holds(r.closed_at)]
        out.append(
            {
                "date": day.since.astimezone(LOCAL_TZ).date().isoformat(),
                "reports": sum(day.holds(r.created_at) for r in sel.incidents),
                "closed": len(closed),
                "closed_on_time": sum(r.id not in timed_out for r in closed),
                "escalations": sum(day.holds(e.at) and e.reason in CLIMBS for e in sel.log),
            }
        )
        day = Period(day.until, day.until + timedelta(days=1))
    return out


def grid_ranking(
    db: Database,
    actor: Actor,
    period: Period,
    tree: JurisdictionTree,
    jurisdiction: str | None = None,
    limit: int = 10,
) -> list[dict[str, Any]]:
    """Grids by how often their cases ran out of time in the period (worst first): cases reported, cases with
    a timeout, the timeout share, and the on-time closure rate."""
    sel = _rows(db, actor, jurisdiction)
    timed_out = {e.incident_id for e in sel.log if e.reason in TIMEOUTS}
    per_grid: dict[str, list[m.Incident]] = defaultdict(list)
    for r in sel.incidents:
        if r.grid_code and period.holds(r.created_at):
            per_grid[r.grid_code].append(r)
    rows = []
    for grid, cases in per_grid.items():
        late = sum(r.id in timed_out for r in cases)
        closed = [r for r in cases if r.state == "closed"]
        rows.append(
            {
                "grid": grid,
                "name": tree.name(grid),
                "reports": len(cases),
                "timed_out": late,
                "timeout_rate": _rate(late, len(cases)),
                "on_time_rate": _rate(sum(r.id not in timed_out for r in closed), len(closed)),
            }
        )
    rows.sort(key=lambda g: (-(g["timeout_rate"] or 0), -g["timed_out"], g["grid"]))
    return rows[:limit]
