"""The pure engine: (case, command, actor, definition, now) -> Outcome.

No database, no clock reads, no I/O. It asks the workflow machine whether an action may fire, applies what the
fired transition declares, recomputes the case's clocks and says what happened (timeline, escalation log,
events). The service persists the Outcome; timers re-enter here through `on_deadline`.
"""

from __future__ import annotations

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
    TimelineEntry,
)
from workflows.definition import TransitionSpec, WorkflowDefinition
from workflows.machine import Subject, WorkflowMachine, explain

EVENT_FOR_ACTION = {
    "assign_grid": "incident.assigned",
    "dispatch": "incident.assigned",
    "call_community": "incident.escalated",
    "escalate": "incident.escalated",
    "auto_escalate": "incident.escalated",
    "merge": "incident.merged",
    "rate": "incident.rated",
}
SIDE_EVENTS = {"comment": "incident.commented", "urge": "incident.urged", "supervise": "incident.supervised"}
YELLOW_AT = 0.8


# ---------------------------------------------------------------- clocks


def compute_deadlines(incident: Incident, definition: WorkflowDefinition) -> tuple[Deadline, ...]:
    """The clocks that should be running on the case now, given its stage and what already went red."""
    if definition.is_final(incident.state):
        return ()
    start = incident.stage_entered_at
    found: list[Deadline] = []

    def add(clock: str, limit_clock: str) -> None:
        if clock in incident.overdue:
            return
        limit = definition.time_limit(
            clock=limit_clock,
            stage=incident.state,
            tier=incident.tier,
            category=incident.category,
            severity=incident.severity,
        )
        if limit is not None:
            found.append(Deadline(clock, start, start + limit.as_timedelta()))

    if incident.state == "coordinated_handling":
        for dept in incident.departments:
            if dept.status == "dispatched":
                add(f"dept_ack:{dept.department}", "ack")
            if dept.status in ("dispatched", "accepted"):
                add(f"dept_resolve:{dept.department}", "resolve")
    else:
        if not incident.accepted:
            add("ack", "ack")
        add("resolve", "resolve")
    if incident.next_supervise_at is not None:
        found.append(Deadline("supervise", start, incident.next_supervise_at))
    return tuple(found)


def light(incident: Incident, now: datetime) -> str:
    """Traffic light of SPEC §2: red past a limit, yellow past 80 % of one, green otherwise."""
    if incident.overdue:
        return "red"
    worst = "green"
    for d in incident.deadlines:
        if d.clock == "supervise":
            continue
        span = (d.due_at - d.started_at).total_seconds()
        used = (now - d.started_at).total_seconds()
        if used >= span:
            return "red"
        if span > 0 and used >= YELLOW_AT * span:
            worst = "yellow"
    return worst


def _settle(incident: Incident, definition: WorkflowDefinition) -> Incident:
    return incident.evolve(deadlines=compute_deadlines(incident, definition))


# ---------------------------------------------------------------- reports


def open_incident(
    incident_id: str,
    report: NewReport,
    grid_code: str | None,
    grid_generation: int | None,
    county: str,
    actor: Actor,
    definition: WorkflowDefinition,
    now: datetime,
) -> Outcome:
    """A new case: entry state from the grid and severity rules of the definition."""
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
    incident = _settle(incident, definition)
    timeline = [
        TimelineEntry(
            now, actor.username, "report", None, incident.state, incident.tier, None, {"accepted": accepted}
        )
    ]
    log: list[LogEntry] = []
    if rule.log_reason:
        log.append(
            LogEntry(
                now,
                "system",
                rule.log_reason,
                None,
                None,
                None,
                incident.state,
                incident.tier,
                incident.unit_at(incident.tier),
            )
        )
    data = {
        "state": incident.state,
        "tier": incident.tier,
        "alarm": rule.alarm,
        "outside_grids": grid_code is None,
    }
    return Outcome(incident, tuple(timeline), tuple(log), (EventOut("incident.created", data),))


# ---------------------------------------------------------------- actions


def _subject(
    incident: Incident, definition: WorkflowDefinition, now: datetime, departments_done: bool
) -> Subject:
    return Subject(
        state=incident.state,
        tier=incident.tier,
        accepted=incident.accepted,
        handled_state=incident.handled_state,
        departments_done=departments_done,
        rated=incident.rating is not None,
        closed_at=incident.closed_at,
        now=now,
        reopen_window=definition.reopen_window,
    )


def _role_allows(spec_roles: tuple[str, ...], actor: Actor, incident: Incident) -> bool:
    if actor.role in spec_roles:
        return True
    return "reporter" in spec_roles and incident.reporter_user == actor.username


def _acts_here(actor: Actor, incident: Incident) -> bool:
    """Unit-bound handlers act only on cases inside their own unit; the grid worker only in their grid."""
    if actor.is_system or actor.role == "department_staff":
        return True
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


def _departments_after(incident: Incident, command: Command, actor: Actor) -> tuple[DeptAssignment, ...]:
    """Department statuses as they would be after a dept_* action (checked, not yet committed)."""
    if not command.action.startswith("dept_"):
        return incident.departments
    mine = [d for d in incident.departments if d.department == actor.department]
    if not mine:
        raise Refusal(403, "not_assigned", "your department is not assigned to this case")
    current = mine[0]
    allowed_from = {
        "dept_accept": ("dispatched",),
        "dept_complete": ("dispatched", "accepted"),
        "dept_return": ("dispatched", "accepted"),
    }[command.action]
    if current.status not in allowed_from:
        raise Refusal(
            409,
            "illegal_action",
            f"{command.action} is not possible: your department's status is {current.status}",
        )
    new_status = {"dept_accept": "accepted", "dept_complete": "completed", "dept_return": "returned"}[
        command.action
    ]
    return tuple(
        DeptAssignment(d.department, d.role, new_status) if d.department == actor.department else d
        for d in incident.departments
    )


def decide(
    incident: Incident,
    command: Command,
    actor: Actor,
    definition: WorkflowDefinition,
    machine: WorkflowMachine,
    now: datetime,
) -> Outcome:
    """Take `command` on `incident` or raise Refusal (403 role/place, 409 illegal now, 422 missing input)."""
    if command.action in definition.side_actions:
        return _side_action(incident, command, actor, definition, now)
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
    if not permitted or not (_acts_here(actor, incident) or as_reporter):
        raise Refusal(403, "forbidden", f"role {actor.role!r} may not {command.action!r} this case here")
    departments = _departments_after(incident, command, actor)
    done = all(d.status == "completed" for d in departments)
    subject = _subject(incident, definition, now, done)
    fired = machine.fire(command.action, subject)
    if fired is None:
        reasons = sorted({explain(c) for c in machine.failing_conditions(command.action, subject)})
        raise Refusal(
            409,
            "illegal_action",
            f"action {command.action!r} refused: {'; '.join(reasons) or 'not possible now'}",
        )
    if fired not in permitted:
        raise Refusal(
            403, "forbidden", f"role {actor.role!r} may not {command.action!r} at tier {incident.tier!r}"
        )
    _require(command, fired.needs)
    if command.action == "rate" and not (command.rating and 1 <= command.rating <= 5):
        raise Refusal(422, "bad_rating", "rating must be an integer from 1 to 5")
    return _apply(incident, fired, command, actor, definition, now, departments)


def _apply(
    incident: Incident,
    fired: TransitionSpec,
    command: Command,
    actor: Actor,
    definition: WorkflowDefinition,
    now: datetime,
    departments: tuple[DeptAssignment, ...],
    reason: str | None = None,
    late_seconds: float | None = None,
) -> Outcome:
    before = incident
    changes: dict[str, Any] = {"departments": departments, "version": incident.version + 1}
    moves = fired.dest is not None
    if moves:
        dest = fired.dest
        assert dest is not None
        changes.update(
            state=dest, stage_entered_at=now, accepted=False, overdue=frozenset(), next_supervise_at=None
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
    changes.update(_action_effects(incident, fired, command, now))
    after = _settle(incident.evolve(**changes), definition)

    timeline = TimelineEntry(
        now,
        actor.username,
        command.action,
        before.state,
        after.state,
        after.tier,
        command.note,
        _timeline_data(command),
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
    data = {
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
    return Outcome(after, (timeline,), tuple(log), (EventOut(event_type, data),))


def _action_effects(
    incident: Incident, fired: TransitionSpec, command: Command, now: datetime
) -> dict[str, Any]:
    """What an action changes beyond the declared `set`: departments, rating, merge target, closure."""
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
    if fired.dest == "closed":
        return {"closed_at": now}
    if action == "reopen":
        return {"closed_at": None, "rating": None}
    return {}


def _timeline_data(command: Command) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if command.lead:
        data["departments"] = {"lead": command.lead, "co": list(command.co)}
    if command.target:
        data["target"] = command.target
    if command.rating is not None:
        data["rating"] = command.rating
    return data


def _side_action(
    incident: Incident, command: Command, actor: Actor, definition: WorkflowDefinition, now: datetime
) -> Outcome:
    side = definition.side_actions[command.action]
    if definition.is_final(incident.state):
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
    log = ()
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


def on_deadline(
    incident: Incident,
    clock: str,
    due_at: datetime,
    definition: WorkflowDefinition,
    machine: WorkflowMachine,
    now: datetime,
) -> Outcome | None:
    """A clock went red. None when the case has moved on and the clock no longer runs (nothing happens)."""
    if not any(d.clock == clock and d.due_at == due_at for d in incident.deadlines):
        return None
    late = max(0.0, (now - due_at).total_seconds())
    if clock in ("ack", "resolve"):
        subject = _subject(incident, definition, now, False)
        fired = machine.fire("auto_escalate", subject)
        if fired is not None:
            command = Command(action="auto_escalate", note=f"{clock} limit passed")
            return _apply(
                incident,
                fired,
                command,
                Actor("system", "system"),
                definition,
                now,
                incident.departments,
                f"{clock}_timeout",
                late,
            )
        repeat = incident.tier == definition.tiers[-1]
        return _overdue(incident, clock, "supervise", definition, now, late, repeat=repeat)
    if clock.startswith("dept_"):
        return _overdue(incident, clock, "dept_timeout", definition, now, late, repeat=False)
    if clock == "supervise":
        return _overdue(incident, clock, "supervise", definition, now, late, repeat=True)
    return None


def _overdue(
    incident: Incident,
    clock: str,
    reason: str,
    definition: WorkflowDefinition,
    now: datetime,
    late: float,
    *,
    repeat: bool,
) -> Outcome:
    """Red light with nowhere to climb: a 督办 record (or dept_timeout), and at county tier a repeating alarm."""
    next_at = now + definition.county_supervise_every.as_timedelta() if repeat else incident.next_supervise_at
    overdue = incident.overdue if clock == "supervise" else incident.overdue | {clock}
    after = _settle(
        incident.evolve(overdue=overdue, next_supervise_at=next_at, version=incident.version + 1), definition
    )
    unit = incident.unit_at(incident.tier)
    to_unit = clock.partition(":")[2] if clock.startswith("dept_") else unit
    note = f"{clock} limit passed"
    log = LogEntry(
        now,
        "system",
        reason,
        incident.state,
        incident.tier,
        unit,
        incident.state,
        incident.tier,
        to_unit,
        late,
        note,
    )
    timeline = TimelineEntry(
        now, "system", "overdue", incident.state, incident.state, incident.tier, note, {"clock": clock}
    )
    data = {"clock": clock, "reason": reason, "late_seconds": late, "alarm": repeat}
    return Outcome(after, (timeline,), (log,), (EventOut("incident.overdue", data),))
