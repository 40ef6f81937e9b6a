"""Read side: lists, details, the escalation log, the event outbox. Never changes anything."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select

from dispatch import models as m
from dispatch.access import COUNTY_WIDE_ROLES, SYSTEM_CLIENT_ROLES, can_see
from dispatch.clock import utc
from dispatch.db import Database
from dispatch.domain import Actor
from dispatch.engine import light
from dispatch.ledger import ChainCheck, verify_chain
from dispatch.service import report_fields, to_domain
from dispatch.views import incident_view
from grids.directory import JurisdictionTree


@dataclass(frozen=True)
class IncidentFilter:
    state: str | None = None
    tier: str | None = None
    category: str | None = None
    jurisdiction: str | None = None
    light: str | None = None
    overdue: bool | None = None
    updated_after: datetime | None = None
    bbox: tuple[float, float, float, float] | None = None
    cursor: str | None = None
    limit: int = 50


def _scope(stmt: Any, actor: Actor) -> Any:
    """Restrict a query on incidents to what the actor may see (the same rule as access.can_see)."""
    if actor.role == "admin" and actor.unit_code is None:
        return stmt
    if actor.role == "department_staff":
        mine = select(m.IncidentDepartment.incident_id).where(
            m.IncidentDepartment.department == actor.department
        )
        return stmt.where(m.Incident.id.in_(mine))
    if actor.role in SYSTEM_CLIENT_ROLES:
        return stmt.where(m.Incident.reporter_user == actor.username)
    if actor.unit_code is None:
        return stmt.where(False)
    if actor.role in COUNTY_WIDE_ROLES:
        return stmt.where(m.Incident.county == actor.unit_code[:6])
    inside = m.Incident.grid_code.startswith(actor.unit_code)
    return stmt.where(or_(inside, m.Incident.reporter_user == actor.username))


def list_incidents(
    db: Database, actor: Actor, f: IncidentFilter, tree: JurisdictionTree, now: datetime
) -> dict[str, Any]:
    stmt = _scope(select(m.Incident), actor)
    if f.state:
        stmt = stmt.where(m.Incident.state == f.state)
    if f.tier:
        stmt = stmt.where(m.Incident.tier == f.tier)
    if f.category:
        stmt = stmt.where(m.Incident.category == f.category)
    if f.jurisdiction:
        code = f.jurisdiction
        stmt = (
            stmt.where(m.Incident.county == code)
            if len(code) == 6
            else stmt.where(m.Incident.grid_code.startswith(code))
        )
    if f.updated_after:
        stmt = stmt.where(m.Incident.updated_at > f.updated_after)
    if f.bbox:
        w, s_, e, n = f.bbox
        stmt = stmt.where(m.Incident.lon >= w, m.Incident.lon <= e, m.Incident.lat >= s_, m.Incident.lat <= n)
    if f.cursor:
        stmt = stmt.where(m.Incident.id < f.cursor)
    stmt = stmt.order_by(m.Incident.id.desc())
    items: list[dict[str, Any]] = []
    last_id: str | None = None
    with db.read() as s:
        # The light is computed from the clocks, so it is filtered here; pages stay bounded by scanning in chunks.
        for row in s.execute(stmt.execution_options(yield_per=200)).scalars():
            last_id = row.id
            inc = to_domain(row)
            if f.light and light(inc, now) != f.light:
                continue
            if f.overdue is not None and bool(inc.overdue) != f.overdue:
                continue
            items.append(incident_view(inc, report_fields(row), tree, now, actor))
            if len(items) >= f.limit:
                break
    more = len(items) >= f.limit
    return {"items": items, "next_cursor": last_id if more else None}


def incident_detail(
    db: Database, actor: Actor, incident_id: str, tree: JurisdictionTree, now: datetime
) -> dict[str, Any] | None:
    with db.read() as s:
        row = s.get(m.Incident, incident_id)
        if row is None:
            return None
        inc = to_domain(row)
        if not can_see(actor, inc):
            return None
        view = incident_view(inc, report_fields(row), tree, now, actor)
        timeline = s.execute(
            select(m.TimelineEntry)
            .where(m.TimelineEntry.incident_id == incident_id)
            .order_by(m.TimelineEntry.id)
        ).scalars()
        view["timeline"] = [
            {
                "seq": t.seq,
                "at": utc(t.at).isoformat(),
                "actor": t.actor,
                "action": t.action,
                "from_state": t.from_state,
                "to_state": t.to_state,
                "tier": t.tier,
                "note": t.note,
                "data": t.data,
            }
            for t in timeline
        ]
        log = s.execute(
            select(m.EscalationEntry)
            .where(m.EscalationEntry.incident_id == incident_id)
            .order_by(m.EscalationEntry.id)
        ).scalars()
        view["escalations"] = [escalation_dict(e) for e in log]
        return view


def escalation_dict(e: m.EscalationEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "incident_id": e.incident_id,
        "seq": e.seq,
        "at": utc(e.at).isoformat(),
        "reason": e.reason,
        "actor": e.actor,
        "from": {"state": e.from_state, "tier": e.from_tier, "unit": e.from_unit},
        "to": {"state": e.to_state, "tier": e.to_tier, "unit": e.to_unit},
        "late_seconds": e.late_seconds,
        "note": e.note,
        "hash": e.hash,
    }


def log_scope(stmt: Any, actor: Actor) -> Any:
    """Restrict a query on the escalation log to the entries of cases the actor may see. County-wide roles
    filter on the entry's own county (written with it: the case's county) instead of matching the log
    against every case of the county."""
    e = m.EscalationEntry
    if actor.role == "admin" and actor.unit_code is None:
        return stmt
    if actor.role in COUNTY_WIDE_ROLES and actor.unit_code is not None:
        return stmt.where(e.county == actor.unit_code[:6])
    return stmt.where(e.incident_id.in_(_scope(select(m.Incident.id), actor)))


# A time-filtered page sorts the range's entries when there are at most this many (read through an index on
# time); a wider range walks the log in id order instead.
RANGE_SORT_MAX = 100_000


def escalations(
    db: Database,
    actor: Actor,
    *,
    jurisdiction: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    reason: str | None = None,
    tier: str | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    e = m.EscalationEntry
    stmt = log_scope(select(e.id), actor)
    if since:
        stmt = stmt.where(e.at >= since)
    if until:
        stmt = stmt.where(e.at < until)
    in_range = stmt
    if jurisdiction:
        stmt = stmt.where(or_(e.to_unit.startswith(jurisdiction), e.from_unit.startswith(jurisdiction)))
    if reason:
        stmt = stmt.where(e.reason == reason)
    if tier:
        stmt = stmt.where(e.to_tier == tier)
    if after_id:
        stmt = stmt.where(e.id > after_id)
    with db.read() as s:
        order = e.id
        if since or until:
            # Ids and times grow together, which the planner cannot know: walking the primary key for a
            # recent week reads the years before it. Sort the range instead when it is small enough.
            probe = select(func.count()).select_from(in_range.limit(RANGE_SORT_MAX).subquery())
            if s.execute(probe).scalar_one() < RANGE_SORT_MAX:
                order = e.id + 0  # not the primary key's order: read the range, then sort its ids
        ids = list(s.scalars(stmt.order_by(order).limit(limit)))
        page = s.scalars(select(e).where(e.id.in_(ids)).order_by(e.id)) if ids else []
        rows = [escalation_dict(x) for x in page]
    return {"items": rows, "next_cursor": rows[-1]["id"] if len(rows) == limit else None}


HASHED_FIELDS = (
    "incident_id",
    "seq",
    "at",
    "county",
    "reason",
    "actor",
    "from_state",
    "from_tier",
    "from_unit",
    "to_state",
    "to_tier",
    "to_unit",
    "late_seconds",
    "note",
)


def verify_escalation_log(db: Database) -> ChainCheck:
    with db.read() as s:
        rows = s.execute(
            select(m.EscalationEntry).order_by(m.EscalationEntry.id).execution_options(yield_per=1000)
        ).scalars()
        return verify_chain(
            (e.id or 0, e.prev_hash, e.hash, {k: getattr(e, k) for k in HASHED_FIELDS}) for e in rows
        )


def verify_timelines(db: Database) -> tuple[ChainCheck, str | None]:
    """Every case's timeline chain; the first broken entry and its case."""
    from itertools import groupby

    from dispatch.service import TIMELINE_HASHED

    checked = 0
    with db.read() as s:
        rows = s.execute(
            select(m.TimelineEntry)
            .order_by(m.TimelineEntry.incident_id, m.TimelineEntry.id)
            .execution_options(yield_per=1000)
        ).scalars()
        for incident_id, entries in groupby(rows, key=lambda t: t.incident_id):
            # Entries written before timelines were chained (revision 0006) carry no hash and are skipped.
            chained = [t for t in entries if t.hash]
            check = verify_chain(
                (t.id or 0, t.prev_hash, t.hash, {k: getattr(t, k) for k in TIMELINE_HASHED}) for t in chained
            )
            checked += check.entries
            if not check.ok:
                return ChainCheck(False, checked, check.first_broken_id, check.problem), incident_id
    return ChainCheck(True, checked), None


def latest_seq(db: Database) -> int:
    with db.read() as s:
        return int(s.execute(select(func.max(m.Event.seq))).scalar_one_or_none() or 0)


def events_after(db: Database, seq: int, limit: int = 1000, until: int | None = None) -> list[dict[str, Any]]:
    """Events in seq order, as the envelope of SPEC §5."""
    stmt = select(m.Event).where(m.Event.seq > seq)
    if until is not None:
        stmt = stmt.where(m.Event.seq <= until)
    with db.read() as s:
        rows = s.execute(stmt.order_by(m.Event.seq).limit(limit)).scalars().all()
    return [
        {
            "seq": e.seq,
            "type": e.type,
            "at": utc(e.at).isoformat(),
            "incident_id": e.incident_id,
            "jurisdiction": e.jurisdiction,
            "data": e.data,
        }
        for e in rows
    ]


def pending_deadlines(db: Database, due_before: datetime) -> list[tuple[int, datetime]]:
    with db.read() as s:
        rows = s.execute(
            select(m.DeadlineRow.id, m.DeadlineRow.due_at)
            .where(m.DeadlineRow.status == "pending", m.DeadlineRow.due_at <= due_before)
            .order_by(m.DeadlineRow.due_at)
        ).all()
    return [(int(i), utc(d)) for i, d in rows]


def category_codes(db: Database) -> dict[str, str]:
    with db.read() as s:
        return {c.code: c.name for c in s.execute(select(m.Category)).scalars()}
