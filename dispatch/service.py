"""The dispatch service: the one choke point through which every state change goes.

HTTP actions, new reports and timer firings all end in `_commit`: lock the case (BEGIN IMMEDIATE on SQLite,
SELECT ... FOR UPDATE on PostgreSQL), run the pure engine, then write the case (compare-and-set on its
version), its timeline, the escalation log, the events and the clocks in ONE transaction. Listeners hear
about it only after the commit (screens, timers); nothing downstream calls back up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dispatch import domain, engine
from dispatch import models as m
from dispatch.access import can_see
from dispatch.batching import GroupCommitter
from dispatch.calendars import CalendarBook
from dispatch.clock import Clock, utc
from dispatch.codec import deadline_from_json, deadline_to_json, suspension_from_json, suspension_to_json
from dispatch.db import LAST_SEQ_KEY, Database
from dispatch.domain import (
    Actor,
    Command,
    DeptAssignment,
    Incident,
    LogEntry,
    NewReport,
    Outcome,
    Refusal,
)
from dispatch.duplicates import find_duplicates
from dispatch.intake import flag_near_boundary, open_batch
from dispatch.ledger import GENESIS, entry_hash
from dispatch.views import incident_summary, incident_view
from grids.directory import JurisdictionTree
from workflows.definition import WorkflowDefinition
from workflows.machine import WorkflowMachine

log = logging.getLogger(__name__)
LOCAL_TZ = ZoneInfo("Asia/Shanghai")
EVENT_SEQ = "event_seq"


@dataclass
class Committed:
    """What a commit changed that the outside may want to react to."""

    last_seq: int = 0
    new_deadlines: list[tuple[int, datetime]] = field(default_factory=list)

    def absorb(self, other: Committed) -> None:
        self.last_seq = max(self.last_seq, other.last_seq)
        self.new_deadlines.extend(other.new_deadlines)


@dataclass(frozen=True)
class _ReportJob:
    report: NewReport
    actor: Actor
    idempotency_key: str | None


Listener = Callable[[Committed], None]


class DispatchService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        definitions: dict[tuple[str, int], WorkflowDefinition],
        tree: Callable[[], JurisdictionTree],
        default_workflow: str = "four_stage",
    ) -> None:
        self.db = db
        self.clock = clock
        self.definitions = definitions
        self.machines = {key: WorkflowMachine(d) for key, d in definitions.items()}
        self.tree = tree
        self.default_workflow = default_workflow
        self.listeners: list[Listener] = []
        self.calendars = CalendarBook(db)
        self._intake: GroupCommitter[_ReportJob, dict[str, Any]] = GroupCommitter(self._open_reports)
        self.duplicate_window_hours = 72.0  # candidates for 重复上报 reported within this window

    # ------------------------------------------------------------ workflow lookup

    def current_definition(self, name: str | None = None) -> WorkflowDefinition:
        name = name or self.default_workflow
        versions = [v for (n, v) in self.definitions if n == name]
        if not versions:
            raise Refusal(404, "unknown_workflow", f"no workflow named {name!r}")
        return self.definitions[(name, max(versions))]

    def _definition_of(self, incident: Incident) -> tuple[WorkflowDefinition, WorkflowMachine]:
        key = (incident.workflow, incident.workflow_version)
        return self.definitions[key], self.machines[key]

    def definition_for_category(self, category: str) -> WorkflowDefinition:
        """The newest version of the workflow that claims `category`, else the default workflow."""
        claimed = [d for d in self.definitions.values() if category in d.categories]
        if claimed:
            return max(claimed, key=lambda d: d.version)
        return self.current_definition()

    def context(self, definition: WorkflowDefinition, county: str, now: datetime) -> engine.Context:
        machine = self.machines[(definition.name, definition.version)]
        return engine.Context(
            definition, machine, now, self.calendars.calendar(county), self.calendars.duty()
        )

    # ------------------------------------------------------------ commands

    def submit_report(
        self, report: NewReport, actor: Actor, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Route and open a case; returns once it is committed (group commit with the reports that arrived
        together). With an idempotency key, a retry returns the first answer unchanged."""
        return self._intake.submit(_ReportJob(report, actor, idempotency_key))

    def _open_reports(self, jobs: Sequence[_ReportJob]) -> list[dict[str, Any] | BaseException]:
        """One transaction for a batch of reports: the bulk path, or if anything in the batch needs care
        (a refused report, an idempotency race), a savepoint per report."""
        self.calendars.refresh()
        tree = self.tree()
        try:
            with self.db.write() as s:
                views, added, last_seq = open_batch(self, s, tree, jobs)
        except Exception:
            log.debug("bulk intake fell back to one savepoint per report", exc_info=True)
            return self._open_carefully(tree, jobs)
        self._announce(Committed(last_seq=last_seq, new_deadlines=added))
        return list(views)

    def _open_carefully(
        self, tree: JurisdictionTree, jobs: Sequence[_ReportJob]
    ) -> list[dict[str, Any] | BaseException]:
        results: list[dict[str, Any] | BaseException] = []
        raced: list[int] = []
        batch = Committed()
        with self.db.write() as s:
            for job in jobs:
                try:
                    with s.begin_nested():
                        view, committed = self._open_one(s, tree, job)
                    results.append(view)
                    batch.absorb(committed)
                except IntegrityError as exc:
                    if not job.idempotency_key:
                        results.append(exc)
                        continue
                    raced.append(
                        len(results)
                    )  # another process stored this key first: answer with its result
                    results.append(exc)
                except Exception as exc:
                    results.append(exc)
        self._announce(batch)
        for i in raced:
            job = jobs[i]
            with self.db.read() as s:
                earlier = s.get(m.IdempotencyRecord, (job.actor.username, job.idempotency_key))
            if earlier is not None:
                results[i] = earlier.response
        return results

    def _open_one(
        self, s: Session, tree: JurisdictionTree, job: _ReportJob
    ) -> tuple[dict[str, Any], Committed]:
        report, actor, key = job.report, job.actor, job.idempotency_key
        if key:
            earlier = s.get(m.IdempotencyRecord, (actor.username, key))
            if earlier is not None:
                return earlier.response, Committed()
        # Inside a grid, or snapped to the nearest one when just outside (flagged near_boundary); else triage.
        routing = tree.route(report.lon, report.lat)
        grid = routing.grid_code
        if grid is None and not tree.counties:
            raise Refusal(409, "no_grids", "no grid set is active")
        county = grid[:6] if grid else self._county_for(tree, actor)
        definition = self.definition_for_category(report.category)
        now = self.clock.now()
        incident_id = self._next_incident_id(s, county, now)
        outcome = engine.open_incident(
            incident_id,
            report,
            grid,
            tree.generation if grid else None,
            county,
            actor,
            self.context(definition, county, now),
        )
        outcome = flag_near_boundary(outcome, routing)
        committed = self._persist(s, None, outcome, now, report)
        view = incident_view(outcome.incident, self._report_fields(report), tree, now, actor)
        window = timedelta(hours=self.duplicate_window_hours)
        view["duplicates"] = find_duplicates(
            s, incident_id, report.category, report.lon, report.lat, actor, now, window
        )
        if key:
            s.add(
                m.IdempotencyRecord(
                    username=actor.username, key=key, incident_id=incident_id, response=view, created_at=now
                )
            )
        return view, committed

    def act(
        self, incident_id: str, command: Command, actor: Actor, expected_version: int | None = None
    ) -> dict[str, Any]:
        command = self._validated(command, actor)
        self.calendars.refresh()

        def decide(incident: Incident, now: datetime) -> Outcome:
            if expected_version is not None and expected_version != incident.version:
                raise Refusal(
                    409, "stale_version", f"the case is at version {incident.version}, not {expected_version}"
                )
            definition, _ = self._definition_of(incident)
            return engine.decide(incident, command, actor, self.context(definition, incident.county, now))

        return self._commit(incident_id, actor, decide)

    def fire_deadline(self, deadline_id: int) -> bool:
        """A timer went off. Takes effect at most once: the clock row is claimed in the same transaction."""
        self.calendars.refresh()
        with self.db.read() as s:
            row = s.get(m.DeadlineRow, deadline_id)
            if row is None or row.status != "pending":
                return False
            incident_id, clock, due = row.incident_id, row.clock, utc(row.due_at)
        if self.clock.now() < due:
            return False  # early (timer jitter): leave it pending rather than claim it without effect
        fired = {"done": False}

        def decide(incident: Incident, now: datetime) -> Outcome | None:
            if now < due:
                return None
            definition, _ = self._definition_of(incident)
            outcome = engine.on_deadline(incident, clock, due, self.context(definition, incident.county, now))
            fired["done"] = outcome is not None
            return outcome

        def claim(s: Session, now: datetime) -> bool:
            claimed = s.execute(
                update(m.DeadlineRow)
                .where(m.DeadlineRow.id == deadline_id, m.DeadlineRow.status == "pending")
                .values(status="fired", fired_at=now)
            )
            return claimed.rowcount == 1

        try:
            self._commit(incident_id, engine_actor(), decide, claim=claim)
        except Refusal as refusal:
            log.info("deadline %s not applied: %s", deadline_id, refusal.detail)
            return False
        return fired["done"]

    # ------------------------------------------------------------ the choke point

    def _commit(
        self,
        incident_id: str,
        actor: Actor,
        decide: Callable[[Incident, datetime], Outcome | None],
        claim: Callable[[Session, datetime], bool] | None = None,
    ) -> dict[str, Any]:
        tree = self.tree()
        with self.db.write() as s:
            row = s.execute(
                select(m.Incident).where(m.Incident.id == incident_id).with_for_update()
            ).scalar_one_or_none()
            if row is None:
                raise Refusal(404, "not_found", f"no case {incident_id}")
            incident = to_domain(row)
            if not actor.is_system and not can_see(actor, incident):
                raise Refusal(404, "not_found", f"no case {incident_id}")
            now = self.clock.now()
            if claim is not None and not claim(s, now):
                return incident_view(incident, report_fields(row), tree, now, actor)
            outcome = decide(incident, now)
            if outcome is None:
                return incident_view(incident, report_fields(row), tree, now, actor)
            committed = self._persist(s, incident, outcome, now)
            view = incident_view(outcome.incident, report_fields(row), tree, now, actor)
        self._announce(committed)
        return view

    def _persist(
        self,
        s: Session,
        before: Incident | None,
        out: Outcome,
        now: datetime,
        report: NewReport | None = None,
    ) -> Committed:
        # SQLAlchemy Core statements, one per table: building ORM objects costs more than the writes here.
        inc = out.incident
        values = row_values(inc, now)
        if before is None:
            assert report is not None
            s.execute(insert(m.Incident.__table__), [{**values, **self._report_fields(report)}])
        else:
            done = s.execute(
                update(m.Incident)
                .where(m.Incident.id == inc.id, m.Incident.version == before.version)
                .values(**values)
            )
            if done.rowcount != 1:
                raise Refusal(
                    409,
                    "stale_version",
                    "the case changed while this action was being taken; reload and retry",
                )
        if before is None or before.departments != inc.departments:
            self._store_departments(s, inc, before)
        new_deadlines = self._store_deadlines(s, before, inc)
        # The event seq is bumped last: its row lock orders every writer until commit (see _bump).
        last_seq = self._bump(s, EVENT_SEQ, len(out.events)) if out.events else 0
        first_seq = last_seq - len(out.events) + 1
        if out.timeline:
            prev = GENESIS if before is None else timeline_tail(s, inc.id)
            rows, _ = timeline_rows(prev, inc.id, out.timeline, first_seq)
            s.execute(insert(m.TimelineEntry.__table__), rows)
        if out.log:
            self._append_log(s, inc, out, first_seq)
        if out.events:
            summary = incident_summary(inc, now)
            s.execute(
                insert(m.Event.__table__),
                [
                    {
                        "seq": first_seq + i,
                        "type": e.type,
                        "at": now,
                        "incident_id": inc.id,
                        "county": inc.county,
                        "jurisdiction": list(inc.jurisdiction),
                        "data": {**e.data, "incident": summary},
                    }
                    for i, e in enumerate(out.events)
                ],
            )
        return Committed(last_seq=last_seq, new_deadlines=new_deadlines)

    def _append_log(self, s: Session, inc: Incident, out: Outcome, seq: int) -> None:
        # The event-seq counter bumped above holds the writers in line, so reading the chain's tail is safe.
        rows, _ = log_rows(chain_tail(s), inc, out.log, seq)
        s.execute(insert(m.EscalationEntry.__table__), rows)

    def _store_deadlines(
        self, s: Session, before: Incident | None, inc: Incident
    ) -> list[tuple[int, datetime]]:
        """Make the pending clock rows match the case's running clocks; returns the rows added."""
        wanted = set(engine.timers(inc))
        if before is not None and set(engine.timers(before)) == wanted:
            return []
        table = m.DeadlineRow.__table__
        have: set[tuple[str, datetime]] = set()
        if before is not None:
            pending = s.execute(
                select(table.c.id, table.c.clock, table.c.due_at).where(
                    table.c.incident_id == inc.id, table.c.status == "pending"
                )
            ).all()
            stale = []
            for row_id, clock, due in pending:
                key = (clock, utc(due))
                if key in wanted:
                    have.add(key)
                else:
                    stale.append(row_id)
            if stale:
                s.execute(update(table).where(table.c.id.in_(stale)).values(status="cancelled"))
        fresh = sorted(wanted - have)
        if not fresh:
            return []
        rows = s.execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True),
            [{"incident_id": inc.id, "clock": c, "due_at": due, "status": "pending"} for c, due in fresh],
        ).all()
        return [(int(r.id), due) for r, (_, due) in zip(rows, fresh, strict=True)]

    def _store_departments(self, s: Session, inc: Incident, before: Incident | None) -> None:
        table = m.IncidentDepartment.__table__
        if before is not None:
            s.execute(table.delete().where(table.c.incident_id == inc.id))
        # Departments keep seeing a case they once handled: the previous ones stay listed.
        codes = dict.fromkeys(
            [d.department for d in inc.departments]
            + [d.department for d in (before.departments if before else ())]
        )
        if codes:
            s.execute(insert(table), [{"incident_id": inc.id, "department": code} for code in codes])

    def _bump(self, s: Session, name: str, by: int = 1) -> int:
        """Increment a named counter and return its new value (row-locked until commit).

        For `event_seq` this lock is what makes seq gap-free for readers: a second writer blocks here until
        the first commits (or rolls back, and then reuses its numbers), so commit order is seq order and a
        reader tailing `seq > last` can never see seq n+1 before n (tests/test_scaleout.py proves it on
        PostgreSQL). Bump it late in the transaction: the lock serializes every writer until commit."""
        # Plain SQL on the driver: this runs several times per report (statement building costs more here).
        conn = s.connection()
        mark = "?" if conn.dialect.name == "sqlite" else "%s"
        sql = (
            f"INSERT INTO counter (name, value) VALUES ({mark}, {mark}) "
            f"ON CONFLICT (name) DO UPDATE SET value = counter.value + {mark} RETURNING value"
        )
        value = int(conn.exec_driver_sql(sql, (name, by, by)).scalar_one())
        if name == EVENT_SEQ:
            s.info[LAST_SEQ_KEY] = value  # Database.write sends NOTIFY with it at commit (PostgreSQL)
        return value

    def _next_incident_id(self, s: Session, county: str, now: datetime) -> str:
        day = now.astimezone(LOCAL_TZ).strftime("%Y%m%d")
        return f"{county}-{day}-{self._bump(s, f'incident:{county}:{day}'):05d}"

    # ------------------------------------------------------------ helpers

    def _announce(self, committed: Committed) -> None:
        for listener in self.listeners:
            try:
                listener(committed)
            except Exception:  # a broken screen or timer hook must never undo a committed change
                log.exception("after-commit listener failed")

    @staticmethod
    def _county_for(tree: JurisdictionTree, actor: Actor) -> str:
        if actor.unit_code:
            return actor.unit_code[:6]
        return tree.counties[0]

    @staticmethod
    def _report_fields(report: NewReport) -> dict[str, Any]:
        return {
            "address": report.address,
            "description": report.description,
            "photos": list(report.photos),
            "reporter_name": report.reporter_name,
            "reporter_phone": report.reporter_phone,
        }

    def _validated(self, command: Command, actor: Actor) -> Command:
        """Check references (departments, grids, cases) before anything is locked."""
        with self.db.read() as s:
            if command.action == "dispatch" and command.lead is not None:
                codes = [command.lead, *command.co]
                known = set(
                    s.execute(select(m.Department.code).where(m.Department.code.in_(codes))).scalars()
                )
                unknown = [c for c in codes if c not in known]
                if unknown:
                    raise Refusal(422, "unknown_department", f"unknown department(s): {', '.join(unknown)}")
            if command.action == "merge" and command.target is not None:
                target = s.get(m.Incident, command.target)
                if target is None or target.state in ("closed", "rejected", "merged"):
                    raise Refusal(422, "bad_target", f"{command.target} is not an open case to merge into")
        if command.action == "assign_grid" and command.target is not None:
            tree = self.tree()
            if not tree.is_grid(command.target):
                raise Refusal(422, "bad_target", f"{command.target} is not a grid of the active generation")
            return Command(**{**command.__dict__, "generation": tree.generation})
        return command


def chain_tail(s: Session) -> str:
    """The hash of the newest escalation-log entry (the genesis hash for an empty log)."""
    last = s.execute(select(m.EscalationEntry.hash).order_by(m.EscalationEntry.id.desc()).limit(1))
    return last.scalar_one_or_none() or GENESIS


TIMELINE_HASHED = (
    "incident_id",
    "seq",
    "at",
    "actor",
    "action",
    "from_state",
    "to_state",
    "tier",
    "note",
    "data",
)


def timeline_tail(s: Session, incident_id: str) -> str:
    table = m.TimelineEntry.__table__
    last = s.execute(
        select(table.c.hash).where(table.c.incident_id == incident_id).order_by(table.c.id.desc()).limit(1)
    )
    return last.scalar_one_or_none() or GENESIS


def timeline_rows(
    prev: str, incident_id: str, entries: Sequence[domain.TimelineEntry], seq: int
) -> tuple[list[dict[str, Any]], str]:
    """Timeline rows chained after `prev` (the case's previous entry); returns them and the new tail."""
    rows = []
    for t in entries:
        fields = {
            "incident_id": incident_id,
            "seq": seq,
            "at": t.at,
            "actor": t.actor,
            "action": t.action,
            "from_state": t.from_state,
            "to_state": t.to_state,
            "tier": t.tier,
            "note": t.note,
            "data": t.data,
        }
        digest = entry_hash(prev, fields)
        rows.append({**fields, "prev_hash": prev, "hash": digest})
        prev = digest
    return rows, prev


def log_rows(
    prev: str, inc: Incident, entries: Sequence[LogEntry], seq: int
) -> tuple[list[dict[str, Any]], str]:
    """Escalation-log rows chained after `prev`; returns them and the new tail hash."""
    rows = []
    for entry in entries:
        fields = {
            "incident_id": inc.id,
            "seq": seq,
            "at": entry.at,
            "county": inc.county,
            "reason": entry.reason,
            "actor": entry.actor,
            "from_state": entry.from_state,
            "from_tier": entry.from_tier,
            "from_unit": entry.from_unit,
            "to_state": entry.to_state,
            "to_tier": entry.to_tier,
            "to_unit": entry.to_unit,
            "late_seconds": round(entry.late_seconds, 3) if entry.late_seconds is not None else None,
            "note": entry.note,
        }
        digest = entry_hash(prev, fields)
        rows.append({**fields, "prev_hash": prev, "hash": digest})
        prev = digest
    return rows, prev


def engine_actor() -> Actor:
    return Actor("system", "system")


def to_domain(row: m.Incident) -> Incident:
    return Incident(
        id=row.id,
        county=row.county,
        workflow=row.workflow,
        workflow_version=row.workflow_version,
        source=row.source,
        category=row.category,
        severity=row.severity,
        state=row.state,
        tier=row.tier,
        grid_code=row.grid_code,
        grid_generation=row.grid_generation,
        lon=row.lon,
        lat=row.lat,
        created_at=utc(row.created_at),
        stage_entered_at=utc(row.stage_entered_at),
        reporter_user=row.reporter_user,
        accepted=row.accepted,
        handled_state=row.handled_state,
        handled_tier=row.handled_tier,
        departments=tuple(DeptAssignment(d["department"], d["role"], d["status"]) for d in row.departments),  # type: ignore[arg-type]
        deadlines=tuple(deadline_from_json(d) for d in row.deadlines),
        overdue=frozenset(row.overdue),
        next_supervise_at=utc(row.next_supervise_at) if row.next_supervise_at else None,
        pending_request=row.pending_request,
        suspension=suspension_from_json(row.suspension),
        near_boundary=bool(row.near_boundary),
        rework_count=row.rework_count,
        rating=row.rating,
        closed_at=utc(row.closed_at) if row.closed_at else None,
        merged_into=row.merged_into,
        version=row.version,
    )


def row_values(inc: Incident, now: datetime) -> dict[str, Any]:
    return {
        "id": inc.id,
        "county": inc.county,
        "workflow": inc.workflow,
        "workflow_version": inc.workflow_version,
        "source": inc.source,
        "category": inc.category,
        "severity": inc.severity,
        "state": inc.state,
        "tier": inc.tier,
        "grid_code": inc.grid_code,
        "grid_generation": inc.grid_generation,
        "lon": inc.lon,
        "lat": inc.lat,
        "reporter_user": inc.reporter_user,
        "accepted": inc.accepted,
        "handled_state": inc.handled_state,
        "handled_tier": inc.handled_tier,
        "departments": [
            {"department": d.department, "role": d.role, "status": d.status} for d in inc.departments
        ],
        "deadlines": [deadline_to_json(d) for d in inc.deadlines],
        "overdue": sorted(inc.overdue),
        "next_supervise_at": inc.next_supervise_at,
        "pending_request": inc.pending_request,
        "suspension": suspension_to_json(inc.suspension),
        "rework_count": inc.rework_count,
        "rating": inc.rating,
        "closed_at": inc.closed_at,
        "merged_into": inc.merged_into,
        "created_at": inc.created_at,
        "stage_entered_at": inc.stage_entered_at,
        "updated_at": now,
        "version": inc.version,
        "near_boundary": inc.near_boundary,
    }


def report_fields(row: m.Incident) -> dict[str, Any]:
    return {
        "address": row.address,
        "description": row.description,
        "photos": list(row.photos or []),
        "reporter_name": row.reporter_name,
        "reporter_phone": row.reporter_phone,
    }
