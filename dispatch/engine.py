"""The pure engine: (case, command, actor, context) -> Outcome.

No database, no clock reads, no I/O. It asks the workflow machine whether an action may fire, applies what the
fired transition declares, runs the case's clocks on the county's working calendar and says what happened
(timeline, escalation log, events). The service persists the Outcome; timers re-enter through `on_deadline`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from dispatch.access import COUNTY_WIDE_ROLES
from dispatch.domain import (
    Actor,
    Command,
    Deadline,
    DeptAssignment,
    EventOut,
    Incident,
    LogEntry,
    NewReport,
    Outcome,
    Refusal,
    Suspension,
    TimelineEntry,
)
from dispatch.duty import NO_DUTY, DutyBook
from dispatch.workcal import DEFAULT_CALENDAR, WorkingCalendar
from workflows.definition import TransitionSpec, WorkflowDefinition
from workflows.machine import Subject, WorkflowMachine, explain

EVENT_FOR_ACTION = {
    "assign_grid": "incident.assigned",
    "dispatch": "incident.assigned",
    "call_community": "incident.escalated",
    "escalate": "incident.escalated",
    "skip_escalate": "incident.escalated",
    "auto_escalate": "incident.escalated",
    "merge": "incident.merged",
    "rate": "incident.rated",
    "approve_suspend": "incident.suspended",
    "resume": "incident.resumed",
    "approve_extension": "incident.extended",
}
SIDE_EVENTS = {"comment": "incident.commented", "urge": "incident.urged", "supervise": "incident.supervised"}
SYSTEM = Actor("system", "system")


@dataclass(frozen=True)
class Context:
    """Everything a decision may depend on besides the case and the command."""

    definition: WorkflowDefinition
    machine: WorkflowMachine
    now: datetime
    calendar: WorkingCalendar = DEFAULT_CALENDAR
    duty: DutyBook = NO_DUTY


# ---------------------------------------------------------------- clocks


def _clock(ctx: Context, name: str, limit_clock: str, inc: Incident, start: datetime) -> Deadline | None:
    limit = ctx.definition.time_limit(
        clock=limit_clock, stage=inc.state, tier=inc.tier, category=inc.category, severity=inc.severity
    )
    if limit is None:
        return None
    cal = ctx.calendar
    minutes = cal.limit_minutes(limit.value, limit.unit)
    due = cal.shift(start, minutes, limit.unit)
    warn = cal.shift(start, minutes * ctx.definition.yellow_at, limit.unit)
    return Deadline(name, start, due, limit.unit, minutes, warn)


def start_clocks(inc: Incident, ctx: Context, start: datetime) -> tuple[Deadline, ...]:
    """The clocks a case gets on entering its stage (or when departments are dispatched)."""
    if ctx.definition.is_final(inc.state) or inc.state == "suspended":
        return ()
    wanted: list[tuple[str, str]] = []
    if inc.state == "coordinated_handling":
        for d in inc.departments:
            if d.status == "dispatched":
                wanted.append((f"dept_ack:{d.department}", "ack"))
            if d.status in ("dispatched", "accepted"):
                wanted.append((f"dept_resolve:{d.department}", "resolve"))
    else:
        if not inc.accepted:
            wanted.append(("ack", "ack"))
        wanted.append(("resolve", "resolve"))
    found = (_clock(ctx, name, kind, inc, start) for name, kind in wanted)
    return tuple(d for d in found if d is not None)


def _still_running(d: Deadline, inc: Incident) -> bool:
    """After an action inside a stage: accepting stops `ack`; a department's clocks stop as it acts."""
    if d.clock == "ack":
        return not inc.accepted
    kind, _, dept = d.clock.partition(":")
    status = next((x.status for x in inc.departments if x.department == dept), None)
    if kind == "dept_ack":
        return status == "dispatched"
    if kind == "dept_resolve":
        return status in ("dispatched", "accepted")
    return True


def timers(inc: Incident) -> list[tuple[str, datetime]]:
    """(clock, due) of every timer the case needs: red at each deadline, yellow at each warning, repeated 督办.
    The pair is the timer's token: a firing whose pair the case no longer has is stale and does nothing."""
    out: list[tuple[str, datetime]] = []
    for d in inc.deadlines:
        if d.clock not in inc.overdue:
            out.append((d.clock, d.due_at))
            if d.warn_at is not None and d.warn_at < d.due_at and f"warn:{d.clock}" not in inc.overdue:
                out.append((f"warn:{d.clock}", d.warn_at))
    if inc.next_supervise_at is not None:
        out.append(("supervise", inc.next_supervise_at))
    return out


def light(incident: Incident, now: datetime) -> str:
    """Traffic light of SPEC §2: red past a limit, yellow past the warning point (80 % by default)."""
    if any(not c.startswith("warn:") for c in incident.overdue):
        return "red"
    worst = "green"
    for d in incident.deadlines:
        if now >= d.due_at:
            return "red"
        if (d.warn_at is not None and now >= d.warn_at) or f"warn:{d.clock}" in incident.overdue:
            worst = "yellow"
    return worst


# ---------------------------------------------------------------- reports


def open_incident(
    incident_id: str,
    report: NewReport,
    grid_code: str | None,
    grid_generation: int | None,
    county: str,
    actor: Actor,
    ctx: Context,
) -> Outcome:
    """A new case: entry state from the grid and severity rules of the definition."""
    definition, now = ctx.definition, ctx.now
    rule = (
        definition.entry_outside_grids if grid_code is None else definition.entry_by_severity[report.severity]
    )
    own_grid = actor.role == "grid_worker" and grid_code is not None and actor.unit_code == grid_code
    accepted = (
        definition.own_report_accepted
        and own_grid
        and report.source == "grid_worker"
        and rule.state == "grid_discovery"
    )
    incident = Incident(
        id=incident_id,
        county=county,
        workflow=definition.name,
        workflow_version=definition.version,
        source=report.source,
        category=report.category,
        severity=report.severity,
        state=rule.state,
        tier=rule.tier,
        grid_code=grid_code,
        grid_generation=grid_generation,
        lon=report.lon,
        lat=report.lat,
        created_at=now,
        stage_entered_at=now,
        reporter_user=actor.username if not actor.is_system else None,
        accepted=accepted,
    )
    notice, clock_start = _duty_notice(incident, ctx, "report")
    incident = incident.evolve(deadlines=start_clocks(incident, ctx, clock_start))
    timeline = TimelineEntry(
        now, actor.username, "report", None, incident.state, incident.tier, None, {"accepted": accepted}
    )
    log: list[LogEntry] = []
    if rule.log_reason:
        unit = incident.unit_at(incident.tier)
        log.append(
            LogEntry(now, "system", rule.log_reason, None, None, None, incident.state, incident.tier, unit)
        )
    data = {
        "state": incident.state,
        "tier": incident.tier,
        "alarm": rule.alarm,
        "outside_grids": grid_code is None,
    }
    events = [EventOut("incident.created", data)] + ([notice] if notice else [])
    return Outcome(incident, (timeline,), tuple(log), tuple(events))


def _duty_notice(inc: Incident, ctx: Context, why: str) -> tuple[EventOut | None, datetime]:
    """Who is on duty for the unit now answering, and when its clocks start (the next shift's start when
    nobody is on duty and the workflow says to wait)."""
    unit = inc.unit_at(inc.tier)
    roster = ctx.duty.roster(unit)
    if roster is None:
        return None, ctx.now
    member = roster.on_duty(ctx.now)
    start = ctx.now
    waits = member is None and ctx.definition.wait_for_shift
    if waits:
        start = roster.next_on_duty(ctx.now) or ctx.now
    data = {
        "unit": unit,
        "tier": inc.tier,
        "on_duty": member,
        "why": why,
        "clocks_start": start.isoformat(),
        "next_shift_member": roster.on_duty(start) if waits else None,
    }
    return EventOut("incident.notified", data), start


# ---------------------------------------------------------------- actions


def _subject(incident: Incident, ctx: Context, departments_done: bool) -> Subject:
    pending = incident.pending_request["kind"] if incident.pending_request else None
    return Subject(
        state=incident.state,
        tier=incident.tier,
        accepted=incident.accepted,
        handled_state=incident.handled_state,
        departments_done=departments_done,
        rated=incident.rating is not None,
        closed_at=incident.closed_at,
        now=ctx.now,
        reopen_window=ctx.definition.reopen_window,
        pending_request=pending,
        previous_state=incident.suspension.state if incident.suspension else None,
        severity=incident.severity,
    )


def _role_allows(spec_roles: tuple[str, ...], actor: Actor, incident: Incident) -> bool:
    if actor.role in spec_roles:
        return True
    return "reporter" in spec_roles and incident.reporter_user == actor.username


def _acts_here(actor: Actor, incident: Incident) -> bool:
    """Unit-bound handlers act only on cases inside their own unit; the grid worker only in their grid."""
    if actor.is_system:
        return True
    if actor.role == "department_staff":
        return any(d.department == actor.department for d in incident.departments)
    if actor.unit_code is None:
        return actor.role == "admin"
    if actor.role in COUNTY_WIDE_ROLES:
        return incident.county == actor.unit_code[:6]
    return actor.unit_code in incident.jurisdiction


def _require(command: Command, needs: tuple[str, ...]) -> None:
    missing = [n for n in needs if not _has(command, n)]
    if missing:
        raise Refusal(422, "missing_fields", f"action {command.action!r} needs: {', '.join(missing)}")


def _has(command: Command, need: str) -> bool:
    if need == "note":
        return bool(command.note and command.note.strip())
    if need == "departments":
        return command.lead is not None
    return getattr(command, need) is not None


DEPT_MOVES = {
    "dept_accept": (("dispatched",), "accepted"),
    "dept_complete": (("dispatched", "accepted"), "completed"),
    "dept_return": (("dispatched", "accepted"), "returned"),
}


def _departments_after(incident: Incident, command: Command, actor: Actor) -> tuple[DeptAssignment, ...]:
    """Department statuses as they would be after a dept_* action (checked, not yet committed)."""
    if command.action not in DEPT_MOVES:
        return incident.departments
    mine = [d for d in incident.departments if d.department == actor.department]
    if not mine:
        raise Refusal(403, "not_assigned", "your department is not assigned to this case")
    allowed_from, new_status = DEPT_MOVES[command.action]
    if mine[0].status not in allowed_from:
        raise Refusal(
            409,
            "illegal_action",
            f"{command.action} is not possible: your department's status is {mine[0].status}",
        )
    return tuple(
        replace(d, status=new_status) if d.department == actor.department else d  # type: ignore[arg-type]
        for d in incident.departments
    )


def decide(incident: Incident, command: Command, actor: Actor, ctx: Context) -> Outcome:
    """Take `command` on `incident` or raise Refusal (403 role/place, 409 illegal now, 422 missing input)."""
    definition = ctx.definition
    if command.action in definition.side_actions:
        return _side_action(incident, command, actor, ctx)
    candidates = definition.transitions_for(command.action, incident.state)
    if not candidates:
        raise Refusal(
            409,
            "illegal_action",
            f"action {command.action!r} is not possible in state {incident.state!r} "
            f"({definition.states[incident.state].zh})",
        )
    permitted = [t for t in candidates if _role_allows(t.roles, actor, incident)]
    as_reporter = incident.reporter_user == actor.username and any("reporter" in t.roles for t in permitted)
    if not (_acts_here(actor, incident) or as_reporter):
        raise Refusal(403, "forbidden", f"this case is outside your jurisdiction ({actor.role})")
    if not permitted:
        raise _not_yours(incident, command, actor, definition)
    departments = _departments_after(incident, command, actor)
    done = all(d.status == "completed" for d in departments)
    subject = _subject(incident, ctx, done)
    fired = ctx.machine.fire(command.action, subject)
    if fired is None:
        reasons = sorted({explain(c) for c in ctx.machine.failing_conditions(command.action, subject)})
        detail = "; ".join(reasons) or "not possible now"
        raise Refusal(409, "illegal_action", f"action {command.action!r} refused: {detail}")
    if fired not in permitted:
        raise _not_yours(incident, command, actor, definition)
    _require(command, fired.needs)
    if command.action == "rate" and not (command.rating and 1 <= command.rating <= 5):
        raise Refusal(422, "bad_rating", "rating must be an integer from 1 to 5")
    return _apply(incident, fired, command, actor, ctx, departments)


def _not_yours(incident: Incident, command: Command, actor: Actor, definition: WorkflowDefinition) -> Refusal:
    """403 when the role never takes this action; 409 when it does, but not in this stage or at this tier
    (the case moved on: reload it)."""
    if any(actor.role in t.roles for t in definition.transitions if t.trigger == command.action):
        return Refusal(
            409,
            "illegal_action",
            f"{command.action!r} is not for {actor.role} while the case is in {incident.state!r} "
            f"at tier {incident.tier!r}",
        )
    return Refusal(403, "forbidden", f"role {actor.role!r} may not {command.action!r}")


def _apply(
    incident: Incident,
    fired: TransitionSpec,
    command: Command,
    actor: Actor,
    ctx: Context,
    departments: tuple[DeptAssignment, ...],
    reason: str | None = None,
    late_seconds: float | None = None,
) -> Outcome:
    definition, now = ctx.definition, ctx.now
    before = incident
    changes: dict[str, Any] = {"departments": departments, "version": incident.version + 1}
    moves = fired.dest is not None
    if moves:
        dest = fired.dest
        assert dest is not None
        changes.update(
            state=dest,
            stage_entered_at=now,
            accepted=False,
            overdue=frozenset(),
            next_supervise_at=None,
            pending_request=None,
        )
        state_tier = definition.states[dest].tier
        if state_tier is not None:
            changes["tier"] = state_tier
    sets = fired.set
    if sets.get("tier") == "handled":
        changes["tier"] = incident.handled_tier or incident.tier
    elif "tier" in sets:
        changes["tier"] = sets["tier"]
    if sets.get("accepted"):
        changes["accepted"] = True
    if sets.get("handled"):
        changes["handled_state"] = incident.state
        changes["handled_tier"] = incident.tier
    if sets.get("rework"):
        changes["rework_count"] = incident.rework_count + 1
    changes.update(_action_effects(incident, fired, command, actor, ctx))
    after = incident.evolve(**changes)

    events: list[EventOut] = []
    if command.action == "resume":
        after = _resumed(after, incident, ctx)
    elif command.action == "approve_suspend":
        after = after.evolve(deadlines=(), suspension=_frozen(incident, now))
    elif moves:
        notice, start = _duty_notice(after, ctx, command.action) if after.tier != before.tier else (None, now)
        after = after.evolve(deadlines=start_clocks(after, ctx, start))
        events += [notice] if notice else []
    elif command.action == "approve_extension":
        after = _extended(after, incident.pending_request or {}, ctx)
    elif command.action == "dispatch":  # departments arrive: their clocks start
        after = after.evolve(deadlines=start_clocks(after, ctx, now))
    else:
        after = after.evolve(deadlines=tuple(d for d in after.deadlines if _still_running(d, after)))

    timeline = TimelineEntry(
        now,
        actor.username,
        command.action,
        before.state,
        after.state,
        after.tier,
        command.note,
        _timeline_data(command, incident),
    )
    log: list[LogEntry] = []
    log_reason = reason or fired.log_reason
    if log_reason:
        log.append(
            LogEntry(
                now,
                actor.username,
                log_reason,
                before.state,
                before.tier,
                before.unit_at(before.tier),
                after.state,
                after.tier,
                after.unit_at(after.tier),
                late_seconds,
                command.note,
            )
        )
    event_type = EVENT_FOR_ACTION.get(command.action, "incident.transitioned")
    data: dict[str, Any] = {
        "action": command.action,
        "actor": actor.username,
        "from": {"state": before.state, "tier": before.tier},
        "to": {"state": after.state, "tier": after.tier},
    }
    if log:
        data["reason"] = log[0].reason
    if command.action == "merge":
        data["into"] = command.target
    if command.action == "rate":
        data["rating"] = command.rating
    return Outcome(after, (timeline,), tuple(log), (EventOut(event_type, data), *events))


def _action_effects(
    incident: Incident, fired: TransitionSpec, command: Command, actor: Actor, ctx: Context
) -> dict[str, Any]:
    """What an action changes beyond the declared `set`: departments, requests, rating, merge target, closure."""
    action = command.action
    if action == "dispatch":
        lead = [DeptAssignment(command.lead or "", "lead")]
        co = [DeptAssignment(code, "co") for code in dict.fromkeys(command.co) if code != command.lead]
        return {"departments": tuple(lead + co)}
    if action == "dept_return":
        return {"departments": ()}
    if fired.set.get("rework") and fired.dest == "coordinated_handling":
        return {"departments": tuple(DeptAssignment(d.department, d.role) for d in incident.departments)}
    if action == "assign_grid":
        return {"grid_code": command.target, "grid_generation": command.generation}
    if action == "rate":
        return {"rating": command.rating}
    if action == "merge":
        return {"merged_into": command.target}
    if action == "request_extension":
        value, unit = command.extension or (
            ctx.definition.extension_default.value,
            ctx.definition.extension_default.unit,
        )
        return {"pending_request": {"kind": "extension", "by": actor.username, "value": value, "unit": unit}}
    if action == "request_suspend":
        return {"pending_request": {"kind": "suspend", "by": actor.username}}
    if action in ("approve_extension", "deny_extension", "deny_suspend", "approve_suspend"):
        return {"pending_request": None}
    if fired.dest == "closed":
        return {"closed_at": ctx.now}
    if action == "reopen":
        return {"closed_at": None, "rating": None}
    return {}


def _frozen(incident: Incident, now: datetime) -> Suspension:
    return Suspension(
        since=now,
        state=incident.state,
        tier=incident.tier,
        accepted=incident.accepted,
        stage_entered_at=incident.stage_entered_at,
        deadlines=incident.deadlines,
        overdue=incident.overdue,
        next_supervise_at=incident.next_supervise_at,
    )


def _resumed(after: Incident, before: Incident, ctx: Context) -> Incident:
    """Back to where the case was suspended; every clock moves on by the paused time, counted its own way."""
    frozen = before.suspension
    assert frozen is not None
    cal, now = ctx.calendar, ctx.now

    def moved(d: Deadline) -> Deadline:
        pause = cal.measure(frozen.since, now, d.unit)
        warn = cal.shift(d.warn_at, pause, d.unit) if d.warn_at else None
        return replace(d, due_at=cal.shift(d.due_at, pause, d.unit), warn_at=warn)

    supervise = frozen.next_supervise_at + (now - frozen.since) if frozen.next_supervise_at else None
    return after.evolve(
        tier=frozen.tier,
        accepted=frozen.accepted,
        stage_entered_at=frozen.stage_entered_at,
        deadlines=tuple(moved(d) for d in frozen.deadlines),
        overdue=frozen.overdue,
        next_supervise_at=supervise,
        suspension=None,
    )


def _extended(after: Incident, request: dict[str, Any], ctx: Context) -> Incident:
    """延期: the running resolve clocks move by the granted amount; the yellow point moves with them."""
    cal = ctx.calendar
    value, unit = int(request.get("value", 0)), str(request.get("unit", "work_days"))
    granted = cal.limit_minutes(value, unit)
    clocks: list[Deadline] = []
    overdue = set(after.overdue)
    moved_any = False
    for d in after.deadlines:
        if d.clock == "resolve" or d.clock.startswith("dept_resolve:"):
            due = cal.shift(d.due_at, granted, unit)
            limit = d.limit_minutes + cal.measure(d.due_at, due, d.unit)
            warn = cal.shift(due, -(1 - ctx.definition.yellow_at) * limit, d.unit)
            clocks.append(replace(d, due_at=due, limit_minutes=limit, warn_at=warn))
            if warn > ctx.now:
                overdue.discard(f"warn:{d.clock}")
            moved_any = True
        else:
            clocks.append(d)
    if not moved_any:
        raise Refusal(409, "illegal_action", "no running resolve clock to extend")
    return after.evolve(deadlines=tuple(clocks), overdue=frozenset(overdue))


def _timeline_data(command: Command, incident: Incident) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if command.lead:
        data["departments"] = {"lead": command.lead, "co": list(command.co)}
    if command.target:
        data["target"] = command.target
    if command.rating is not None:
        data["rating"] = command.rating
    if command.action == "request_extension" and command.extension:
        data["extension"] = {"value": command.extension[0], "unit": command.extension[1]}
    if command.action == "approve_extension" and incident.pending_request:
        data["extension"] = {k: incident.pending_request.get(k) for k in ("value", "unit")}
    return data


def _side_action(incident: Incident, command: Command, actor: Actor, ctx: Context) -> Outcome:
    side = ctx.definition.side_actions[command.action]
    now = ctx.now
    if ctx.definition.is_final(incident.state):
        raise Refusal(
            409, "illegal_action", f"action {command.action!r} is not possible on a {incident.state} case"
        )
    if actor.role not in side.roles or not _acts_here(actor, incident):
        raise Refusal(403, "forbidden", f"role {actor.role!r} may not {command.action!r} this case")
    _require(command, ("note",))
    after = incident.evolve(version=incident.version + 1)
    timeline = TimelineEntry(
        now, actor.username, command.action, incident.state, incident.state, incident.tier, command.note
    )
    log: tuple[LogEntry, ...] = ()
    if side.log_reason:
        unit = incident.unit_at(incident.tier)
        log = (
            LogEntry(
                now,
                actor.username,
                side.log_reason,
                incident.state,
                incident.tier,
                unit,
                incident.state,
                incident.tier,
                unit,
                None,
                command.note,
            ),
        )
    data = {"action": command.action, "actor": actor.username, "note": command.note}
    return Outcome(after, (timeline,), log, (EventOut(SIDE_EVENTS[command.action], data),))


# ---------------------------------------------------------------- timers


def on_deadline(incident: Incident, clock: str, due_at: datetime, ctx: Context) -> Outcome | None:
    """A timer went off. None when the case no longer has that timer (it moved on): nothing happens."""
    if (clock, due_at) not in timers(incident):
        return None
    late = max(0.0, (ctx.now - due_at).total_seconds())
    if clock.startswith("warn:"):
        return _warning(incident, clock.removeprefix("warn:"), ctx)
    if clock in ("ack", "resolve"):
        subject = _subject(incident, ctx, False)
        fired = ctx.machine.fire("auto_escalate", subject)
        if fired is not None:
            command = Command(action="auto_escalate", note=f"{clock} limit passed")
            out = _apply(
                incident, fired, command, SYSTEM, ctx, incident.departments, f"{clock}_timeout", late
            )
            # 督办: the unit that let the clock run out is put on record too.
            late_unit = incident.unit_at(incident.tier)
            record = LogEntry(
                ctx.now,
                "system",
                "supervise",
                incident.state,
                incident.tier,
                late_unit,
                incident.state,
                incident.tier,
                late_unit,
                late,
                f"督办: {clock} limit passed",
            )
            return replace(out, log=(*out.log, record))
        repeat = incident.tier == ctx.definition.tiers[-1]
        return _overdue(incident, clock, "supervise", ctx, late, repeat=repeat)
    if clock.startswith("dept_"):
        return _overdue(incident, clock, "dept_timeout", ctx, late, repeat=False)
    if clock == "supervise":
        return _overdue(incident, clock, "supervise", ctx, late, repeat=True)
    return None


def _warning(incident: Incident, clock: str, ctx: Context) -> Outcome:
    """Yellow light: an `incident.warning` and a 催办 record to whoever holds the clock."""
    after = incident.evolve(overdue=incident.overdue | {f"warn:{clock}"}, version=incident.version + 1)
    unit = incident.unit_at(incident.tier)
    to_unit = clock.partition(":")[2] if clock.startswith("dept_") else unit
    note = f"催办: {clock} limit at {int(ctx.definition.yellow_at * 100)} %"
    log = LogEntry(
        ctx.now,
        "system",
        "urge",
        incident.state,
        incident.tier,
        unit,
        incident.state,
        incident.tier,
        to_unit,
        None,
        note,
    )
    timeline = TimelineEntry(
        ctx.now, "system", "warning", incident.state, incident.state, incident.tier, note, {"clock": clock}
    )
    due = next((d.due_at.isoformat() for d in incident.deadlines if d.clock == clock), None)
    data = {"clock": clock, "unit": to_unit, "due_at": due}
    return Outcome(after, (timeline,), (log,), (EventOut("incident.warning", data),))


def _overdue(
    incident: Incident, clock: str, reason: str, ctx: Context, late: float, *, repeat: bool
) -> Outcome:
    """Red light with nowhere to climb: a 督办 record (or dept_timeout + 督办 to the department), and at county
    tier a repeating supervisor alarm."""
    now = ctx.now
    every = ctx.definition.county_supervise_every.as_timedelta()
    next_at = now + every if repeat else incident.next_supervise_at
    overdue = incident.overdue if clock == "supervise" else incident.overdue | {clock}
    after = incident.evolve(overdue=overdue, next_supervise_at=next_at, version=incident.version + 1)
    unit = incident.unit_at(incident.tier)
    to_unit = clock.partition(":")[2] if clock.startswith("dept_") else unit
    note = f"{clock} limit passed"
    state, tier = incident.state, incident.tier
    log = [LogEntry(now, "system", reason, state, tier, unit, state, tier, to_unit, late, note)]
    if reason == "dept_timeout":
        log.append(
            LogEntry(
                now, "system", "supervise", state, tier, unit, state, tier, to_unit, late, f"督办: {note}"
            )
        )
    timeline = TimelineEntry(now, "system", "overdue", state, state, tier, note, {"clock": clock})
    data = {"clock": clock, "reason": reason, "unit": to_unit, "late_seconds": late, "alarm": repeat}
    return Outcome(after, (timeline,), tuple(log), (EventOut("incident.overdue", data),))
