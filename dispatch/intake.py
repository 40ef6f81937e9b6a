"""Bulk intake: a batch of new reports written with one statement per table.

The group committer hands over the reports that arrived together. The engine decides each one as usual (pure),
then the rows of the whole batch go out as one executemany per table: on this machine SQLAlchemy spends far
more per statement than SQLite does, so a statement per row per report is what limits intake, not the disk.
Anything unusual (an idempotency key stored meanwhile by another process, a refused report) falls back to the
careful path: one savepoint per report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, tuple_
from sqlalchemy.orm import Session

from dispatch import engine
from dispatch import models as m
from dispatch.domain import Outcome
from dispatch.duplicates import find_duplicates
from dispatch.ledger import GENESIS
from dispatch.views import incident_summary, incident_view
from grids.directory import JurisdictionTree, Routing

if TYPE_CHECKING:
    from dispatch.service import DispatchService, _ReportJob


@dataclass
class _Opened:
    index: int
    job: _ReportJob
    outcome: Outcome


def flag_near_boundary(outcome: Outcome, routing: Routing) -> Outcome:
    """A report just outside every grid was snapped to the nearest one: the case and its events say so."""
    if not routing.near_boundary:
        return outcome
    where = {"near_boundary": True, "distance_m": round(routing.distance_m, 1)}
    return replace(
        outcome,
        incident=outcome.incident.evolve(near_boundary=True),
        events=tuple(replace(e, data={**e.data, **where}) for e in outcome.events),
    )


def open_batch(
    service: DispatchService, s: Session, tree: JurisdictionTree, jobs: Sequence[_ReportJob]
) -> tuple[list[dict[str, Any]], list[tuple[int, datetime]], int]:
    """Write every report of `jobs` in the open transaction `s`; returns their views in order, the deadlines
    added and the last event seq. Raises on anything the careful path must handle."""
    from dispatch.service import EVENT_SEQ, LOCAL_TZ, chain_tail, log_rows, row_values, timeline_rows

    now = service.clock.now()
    answers: dict[int, dict[str, Any]] = {}
    keyed = {(j.actor.username, j.idempotency_key): i for i, j in enumerate(jobs) if j.idempotency_key}
    if keyed:
        table = m.IdempotencyRecord.__table__
        earlier = s.execute(
            select(table.c.username, table.c.key, table.c.response).where(
                tuple_(table.c.username, table.c.key).in_(list(keyed))
            )
        ).all()
        for username, key, response in earlier:
            answers[keyed[(username, key)]] = response
    first_of_key: dict[tuple[str, str], int] = {}
    fresh: list[int] = []
    for i, job in enumerate(jobs):
        if i in answers:
            continue
        if job.idempotency_key:
            k = (job.actor.username, job.idempotency_key)
            if k in first_of_key:
                continue  # the same key twice in one batch: answered with the first one's view below
            first_of_key[k] = i
        fresh.append(i)

    # Route, then number the new cases: one counter bump per county and day for the whole batch.
    routed = {}
    for i in fresh:
        routing = tree.route(jobs[i].report.lon, jobs[i].report.lat)
        grid = routing.grid_code
        if grid is None and not tree.counties:
            raise LookupError("no grid set is active")  # the careful path answers 409 for it
        county = grid[:6] if grid else service._county_for(tree, jobs[i].actor)
        routed[i] = (routing, grid, county)
    day = now.astimezone(LOCAL_TZ).strftime("%Y%m%d")
    per_county = Counter(county for _, _, county in routed.values())
    next_number = {}
    for county, count in per_county.items():
        last = service._bump(s, f"incident:{county}:{day}", count)
        next_number[county] = last - count + 1

    opened: list[_Opened] = []
    for i in fresh:
        job = jobs[i]
        routing, grid, county = routed[i]
        incident_id = f"{county}-{day}-{next_number[county]:05d}"
        next_number[county] += 1
        definition = service.definition_for_category(job.report.category)
        outcome = engine.open_incident(
            incident_id,
            job.report,
            grid,
            tree.generation if grid else None,
            county,
            job.actor,
            service.context(definition, county, now),
        )
        outcome = flag_near_boundary(outcome, routing)
        opened.append(_Opened(i, job, outcome))

    if opened:  # an empty parameter list would make SQLAlchemy insert one row of defaults
        s.execute(
            insert(m.Incident.__table__),
            [{**row_values(o.outcome.incident, now), **service._report_fields(o.job.report)} for o in opened],
        )
    deadline_rows = [
        {"incident_id": o.outcome.incident.id, "clock": c, "due_at": due, "status": "pending"}
        for o in opened
        for c, due in sorted(engine.timers(o.outcome.incident))
    ]
    added: list[tuple[int, datetime]] = []
    if deadline_rows:
        table = m.DeadlineRow.__table__
        ids = s.execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True), deadline_rows
        ).all()
        added = [(int(r.id), row["due_at"]) for r, row in zip(ids, deadline_rows, strict=True)]

    # Events last: the seq counter's row lock orders writers until commit (see DispatchService._bump).
    total = sum(len(o.outcome.events) for o in opened)
    last_seq = service._bump(s, EVENT_SEQ, total) if total else 0
    seq = last_seq - total + 1
    timeline, events, log = [], [], []
    tail = chain_tail(s) if any(o.outcome.log for o in opened) else ""
    for o in opened:
        inc = o.outcome.incident
        summary = incident_summary(inc, now)
        rows, _ = timeline_rows(GENESIS, inc.id, o.outcome.timeline, seq)
        timeline.extend(rows)
        if o.outcome.log:
            rows, tail = log_rows(tail, inc, o.outcome.log, seq)
            log.extend(rows)
        for e in o.outcome.events:
            events.append(
                {
                    "seq": seq,
                    "type": e.type,
                    "at": now,
                    "incident_id": inc.id,
                    "county": inc.county,
                    "jurisdiction": list(inc.jurisdiction),
                    "data": {**e.data, "incident": summary},
                }
            )
            seq += 1
    if timeline:
        s.execute(insert(m.TimelineEntry.__table__), timeline)
    if log:
        s.execute(insert(m.EscalationEntry.__table__), log)
    if events:
        s.execute(insert(m.Event.__table__), events)

    window = timedelta(hours=service.duplicate_window_hours)
    keys = []
    for o in opened:
        inc, job = o.outcome.incident, o.job
        view = incident_view(inc, service._report_fields(job.report), tree, now, job.actor)
        view["duplicates"] = find_duplicates(
            s, inc.id, inc.category, inc.lon, inc.lat, job.actor, now, window
        )
        answers[o.index] = view
        if job.idempotency_key:
            keys.append(
                {
                    "username": job.actor.username,
                    "key": job.idempotency_key,
                    "incident_id": inc.id,
                    "response": view,
                    "created_at": now,
                }
            )
    if keys:
        s.execute(insert(m.IdempotencyRecord.__table__), keys)
    for i, job in enumerate(jobs):
        if i not in answers and job.idempotency_key:
            answers[i] = answers[first_of_key[(job.actor.username, job.idempotency_key)]]
    return [answers[i] for i in range(len(jobs))], added, last_seq
