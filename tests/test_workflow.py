"""The shipped workflows against SPEC §3, (state, action, role) by (state, action, role), on the pure engine.

The expectations below are written out by hand from SPEC §3 and the emergency workflow's design, not derived
from the YAML, so a wrong definition or a wrong engine both fail here.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from dispatch.domain import Actor, Command, DeptAssignment, Incident, Refusal, Suspension
from dispatch.engine import Context, decide, light, on_deadline, start_clocks, timers
from workflows.definition import DefinitionError, load_all, parse_definition
from workflows.machine import WorkflowMachine, mermaid

DEFINITIONS = load_all()
MACHINES = {k: WorkflowMachine(d) for k, d in DEFINITIONS.items()}
NOW = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)  # Monday 09:00 in Asia/Shanghai
GRID = "360102001001001"
URBAN = "360102.urban"
ROLES = [
    "grid_worker",
    "community_staff",
    "township_staff",
    "county_dispatcher",
    "department_staff",
    "supervisor",
    "admin",
]
ACTORS = {
    "grid_worker": Actor("g", "grid_worker", GRID),
    "community_staff": Actor("c", "community_staff", GRID[:12]),
    "township_staff": Actor("t", "township_staff", GRID[:9]),
    "county_dispatcher": Actor("d", "county_dispatcher", GRID[:6]),
    "department_staff": Actor("u", "department_staff", None, URBAN),
    "supervisor": Actor("s", "supervisor", GRID[:6]),
    "admin": Actor("a", "admin", GRID[:6]),
}
HANDLER = {
    "grid": "grid_worker",
    "community": "community_staff",
    "township": "township_staff",
    "county": "county_dispatcher",
}
APPROVER = {
    "grid": "community_staff",
    "community": "township_staff",
    "township": "county_dispatcher",
    "county": "supervisor",
}
SIDE = {
    "comment": set(ROLES),
    "urge": {"county_dispatcher", "township_staff", "supervisor", "admin"},
    "supervise": {"county_dispatcher", "supervisor", "admin"},
}


def side_flows(tier: str, extra: set[str] = frozenset()) -> dict[str, set[str]]:
    asks, decides = {HANDLER[tier], *extra}, {APPROVER[tier]}
    return {
        "request_extension": asks,
        "approve_extension": decides,
        "deny_extension": decides,
        "request_suspend": asks,
        "approve_suspend": decides,
        "deny_suspend": decides,
    }


FOUR_STAGE: dict[tuple[str, str], dict[str, set[str]]] = {
    ("triage", "county"): {
        "assign_grid": {"county_dispatcher", "admin"},
        "reject": {"county_dispatcher", "admin"},
        **side_flows("county"),
    },
    ("grid_discovery", "grid"): {
        a: {"grid_worker"}
        for a in ("accept", "resolve", "call_community", "reject", "merge", "skip_escalate")
    }
    | side_flows("grid"),
    ("community_call", "community"): {
        a: {"community_staff"}
        for a in ("accept", "resolve", "escalate", "return_to_grid", "reject", "skip_escalate")
    }
    | side_flows("community"),
    ("tiered_response", "township"): {
        a: {"township_staff"} for a in ("accept", "resolve", "escalate", "dispatch")
    }
    | side_flows("township"),
    ("tiered_response", "county"): {a: {"county_dispatcher"} for a in ("accept", "resolve", "dispatch")}
    | side_flows("county"),
    ("coordinated_handling", "township"): {
        a: {"department_staff"} for a in ("dept_accept", "dept_complete", "dept_return")
    }
    | side_flows("township", {"department_staff"}),
    ("coordinated_handling", "county"): {
        a: {"department_staff"} for a in ("dept_accept", "dept_complete", "dept_return")
    }
    | side_flows("county", {"department_staff"}),
    ("verification", "grid"): {"verify_pass": {"grid_worker"}, "verify_fail": {"grid_worker"}}
    | side_flows("grid"),
    ("suspended", "grid"): {
        "resume": {"grid_worker", "community_staff", "township_staff", "county_dispatcher", "supervisor"}
    },
    ("closed", "grid"): {"rate": {"supervisor", "county_dispatcher"}, "reopen": {"supervisor"}},
    ("rejected", "grid"): {},
    ("merged", "grid"): {},
}
EMERGENCY: dict[tuple[str, str], dict[str, set[str]]] = {
    ("triage", "county"): {
        "assign_grid": {"county_dispatcher", "admin"},
        "reject": {"county_dispatcher", "admin"},
    },
    ("tiered_response", "township"): {a: {"township_staff"} for a in ("accept", "escalate", "dispatch")},
    ("tiered_response", "county"): {
        a: {"county_dispatcher"} for a in ("accept", "dispatch", "resolve", "merge")
    },
    ("coordinated_handling", "township"): {
        a: {"department_staff"} for a in ("dept_accept", "dept_complete", "dept_return")
    }
    | side_flows("township", {"department_staff"}),
    ("coordinated_handling", "county"): {
        a: {"department_staff"} for a in ("dept_accept", "dept_complete", "dept_return")
    }
    | side_flows("county", {"department_staff"}),
    ("verification", "grid"): {
        "verify_pass": {"grid_worker", "county_dispatcher"},
        "verify_fail": {"grid_worker", "county_dispatcher"},
    },
    ("suspended", "county"): {"resume": {"township_staff", "county_dispatcher", "supervisor"}},
    ("closed", "grid"): {"rate": {"supervisor", "county_dispatcher"}, "reopen": {"supervisor"}},
    ("rejected", "grid"): {},
    ("merged", "grid"): {},
}
EXPECTED = {"four_stage": FOUR_STAGE, "emergency": EMERGENCY}
FINAL = {"closed", "rejected", "merged"}


def ctx(workflow: str = "four_stage", now: datetime = NOW) -> Context:
    key = (workflow, 1)
    return Context(DEFINITIONS[key], MACHINES[key], now)


def case_in(state: str, tier: str, workflow: str = "four_stage", action: str = "") -> Incident:
    """A case in `state` at `tier`, prepared so that `action` can pass its conditions."""
    inc = Incident(
        id="360102-20261130-00001",
        county="360102",
        workflow=workflow,
        workflow_version=1,
        source="hotline",
        category="emergency" if workflow == "emergency" else "sanitation",
        severity="normal",
        state=state,
        tier=tier,
        grid_code=None if state == "triage" else GRID,
        grid_generation=1,
        lon=115.9,
        lat=28.7,
        created_at=NOW,
        stage_entered_at=NOW,
        handled_state=("coordinated_handling" if workflow == "emergency" else "community_call")
        if state == "verification"
        else None,
        handled_tier="community" if state == "verification" else None,
        departments=(DeptAssignment(URBAN, "lead"),) if state == "coordinated_handling" else (),
        closed_at=NOW if state == "closed" else None,
    )
    if action == "skip_escalate":
        inc = inc.evolve(severity="major")  # 越级上报 is for major and critical cases
    inc = inc.evolve(deadlines=start_clocks(inc, ctx(workflow), NOW))
    if action in ("approve_extension", "deny_extension"):
        inc = inc.evolve(pending_request={"kind": "extension", "by": "x", "value": 1, "unit": "work_days"})
    if action in ("approve_suspend", "deny_suspend"):
        inc = inc.evolve(pending_request={"kind": "suspend", "by": "x"})
    if state == "suspended":
        frozen_from = "coordinated_handling" if workflow == "emergency" else "grid_discovery"
        base = case_in(frozen_from, "county" if workflow == "emergency" else "grid", workflow)
        inc = inc.evolve(
            suspension=Suspension(NOW, frozen_from, base.tier, False, NOW, base.deadlines, frozenset(), None),
            departments=base.departments,
        )
    return inc


def full_command(action: str) -> Command:
    target = GRID if action == "assign_grid" else "360102-20261130-00009"
    return Command(action=action, note="原因说明", target=target, lead=URBAN, rating=4)


def side_roles(action: str, incident: Incident) -> set[str]:
    """comment/urge/supervise: by role, and only from where the actor sits (unrouted cases are county-only;
    departments only on cases dispatched to them)."""
    roles = set(SIDE[action])
    if incident.grid_code is None:
        roles -= {"grid_worker", "community_staff", "township_staff"}
    if not any(d.department == URBAN for d in incident.departments):
        roles.discard("department_staff")
    return roles


CASES = [(wf, state, tier) for wf, table in EXPECTED.items() for (state, tier) in table]


@pytest.mark.parametrize(("workflow", "state", "tier"), CASES)
def test_every_state_action_role_follows_the_spec(workflow: str, state: str, tier: str) -> None:
    definition = DEFINITIONS[(workflow, 1)]
    actions = sorted(set(definition.actions) - {"auto_escalate"})
    allowed = EXPECTED[workflow][(state, tier)]
    wrong: list[str] = []
    for action in actions:
        for role in ROLES:
            incident = case_in(state, tier, workflow, action)
            may = role in (
                side_roles(action, incident)
                if action in SIDE and state not in FINAL
                else allowed.get(action, set())
            )
            try:
                out = decide(incident, full_command(action), ACTORS[role], ctx(workflow))
            except Refusal as refusal:
                if may or refusal.status not in (403, 409):
                    wrong.append(f"{action} by {role}: refused {refusal.status} {refusal.detail}")
                continue
            if not may:
                wrong.append(f"{action} by {role}: allowed, expected 403/409")
            elif out.incident.version != incident.version + 1 or len(out.timeline) != 1:
                wrong.append(f"{action} by {role}: outcome incomplete")
    assert not wrong, "\n".join(wrong)


def test_definitions_declare_exactly_the_spec_actions() -> None:
    for workflow, table in EXPECTED.items():
        definition = DEFINITIONS[(workflow, 1)]
        for state in definition.states:
            declared = {
                t.trigger
                for t in definition.transitions
                if t.source == state and t.trigger != "auto_escalate"
            }
            expected = set().union(*(set(v) for (s, _), v in table.items() if s == state))
            assert declared == expected, (workflow, state, declared ^ expected)


@pytest.mark.parametrize(
    ("state", "tier", "to"),
    [
        ("grid_discovery", "grid", ("community_call", "community")),
        ("community_call", "community", ("tiered_response", "township")),
        ("tiered_response", "township", ("tiered_response", "county")),
    ],
)
def test_red_light_climbs_one_tier_with_a_supervision_record(
    state: str, tier: str, to: tuple[str, str]
) -> None:
    inc = case_in(state, tier)
    ack = next(d for d in inc.deadlines if d.clock == "ack")
    out = on_deadline(inc, "ack", ack.due_at, ctx(now=ack.due_at + timedelta(seconds=5)))
    assert out is not None
    assert (out.incident.state, out.incident.tier) == to
    assert [(e.reason, e.actor, e.late_seconds) for e in out.log] == [
        ("ack_timeout", "system", 5.0),
        ("supervise", "system", 5.0),
    ]


def test_a_clock_that_no_longer_runs_does_nothing() -> None:
    inc = case_in("grid_discovery", "grid")
    assert on_deadline(inc, "ack", NOW + timedelta(hours=5), ctx(now=NOW + timedelta(hours=6))) is None


def test_traffic_light_and_yellow_warning() -> None:
    inc = case_in("grid_discovery", "grid")  # ack limit 30 minutes: yellow at 24
    assert light(inc, NOW + timedelta(minutes=23)) == "green"
    assert light(inc, NOW + timedelta(minutes=24)) == "yellow"
    assert light(inc, NOW + timedelta(minutes=30)) == "red"
    assert ("warn:ack", NOW + timedelta(minutes=24)) in timers(inc)
    out = on_deadline(inc, "warn:ack", NOW + timedelta(minutes=24), ctx(now=NOW + timedelta(minutes=24)))
    assert out is not None
    assert [e.type for e in out.events] == ["incident.warning"]
    assert [(e.reason, e.to_unit) for e in out.log] == [("urge", GRID)]
    assert ("warn:ack", NOW + timedelta(minutes=24)) not in timers(out.incident)  # warns once


def test_emergency_lights_turn_yellow_at_half() -> None:
    inc = case_in("tiered_response", "township", "emergency")  # ack 10 minutes, yellow at 50 %
    ack = next(d for d in inc.deadlines if d.clock == "ack")
    assert ack.warn_at == NOW + timedelta(minutes=5)


def test_emergency_departments_must_report_on_scene_within_30_minutes() -> None:
    inc = case_in("tiered_response", "county", "emergency")
    out = decide(
        inc,
        Command("dispatch", lead=URBAN, co=("360102.fire",)),
        ACTORS["county_dispatcher"],
        ctx("emergency"),
    )
    acks = {d.clock: d.due_at - NOW for d in out.incident.deadlines if d.clock.startswith("dept_ack")}
    assert acks == {f"dept_ack:{URBAN}": timedelta(minutes=30), "dept_ack:360102.fire": timedelta(minutes=30)}


def test_most_specific_time_limit_wins() -> None:
    limit = DEFINITIONS[("four_stage", 1)].time_limit
    assert (
        limit(
            clock="ack", stage="grid_discovery", tier="grid", category="sanitation", severity="normal"
        ).value
        == 30
    )
    assert (
        limit(
            clock="ack", stage="grid_discovery", tier="grid", category="fire_hazard", severity="normal"
        ).value
        == 10
    )
    assert (
        limit(clock="ack", stage="tiered_response", tier="county", category="other", severity="normal").value
        == 1
    )
    assert (
        limit(
            clock="ack", stage="community_call", tier="community", category="other", severity="urgent"
        ).value
        == 15
    )


def test_accepting_cancels_the_ack_clock_and_its_warning() -> None:
    inc = case_in("grid_discovery", "grid")
    out = decide(inc, Command("accept"), ACTORS["grid_worker"], ctx())
    assert {c for c, _ in timers(out.incident)} == {"resolve", "warn:resolve"}


def test_extension_moves_the_resolve_deadline_and_its_yellow_point() -> None:
    inc = case_in("community_call", "community")
    asked = decide(
        inc,
        Command("request_extension", note="需要协调物业", extension=(2, "work_days")),
        ACTORS["community_staff"],
        ctx(),
    )
    assert asked.incident.pending_request["kind"] == "extension"
    with pytest.raises(Refusal) as twice:
        decide(asked.incident, Command("request_suspend", note="x"), ACTORS["community_staff"], ctx())
    assert twice.value.status == 409
    granted = decide(asked.incident, Command("approve_extension"), ACTORS["township_staff"], ctx())
    before = next(d for d in inc.deadlines if d.clock == "resolve")
    after = next(d for d in granted.incident.deadlines if d.clock == "resolve")
    cal = ctx().calendar
    assert cal.work_minutes_between(before.due_at, after.due_at) == pytest.approx(2 * cal.minutes_per_day)
    assert after.limit_minutes == pytest.approx(before.limit_minutes + 2 * cal.minutes_per_day)
    assert before.warn_at < after.warn_at < after.due_at
    assert granted.incident.pending_request is None


def test_suspension_pauses_every_clock_and_resume_moves_them_by_the_pause() -> None:
    inc = case_in("community_call", "community")
    asked = decide(inc, Command("request_suspend", note="当事人住院"), ACTORS["community_staff"], ctx())
    later = NOW + timedelta(hours=1)
    suspended = decide(asked.incident, Command("approve_suspend"), ACTORS["township_staff"], ctx(now=later))
    assert suspended.incident.state == "suspended" and timers(suspended.incident) == []
    back_at = later + timedelta(days=3)
    resumed = decide(suspended.incident, Command("resume"), ACTORS["community_staff"], ctx(now=back_at))
    assert (resumed.incident.state, resumed.incident.tier) == ("community_call", "community")
    cal = ctx().calendar
    for old, new in zip(inc.deadlines, resumed.incident.deadlines, strict=True):
        assert cal.measure(old.due_at, new.due_at, old.unit) == pytest.approx(
            cal.measure(later, back_at, old.unit)
        )


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"transitions": [{"trigger": "x", "source": "nowhere", "roles": ["grid_worker"]}]}, "unknown state"),
        ({"transitions": [{"trigger": "x", "source": "triage", "roles": ["wizard"]}]}, "roles"),
        (
            {
                "transitions": [
                    {"trigger": "x", "source": "triage", "roles": ["admin"], "conditions": ["moon_is_full"]}
                ]
            },
            "condition",
        ),
        ({"time_limits": [{"clock": "ack", "value": 2, "unit": "fortnights"}]}, "unit"),
        ({"time_limits": [{"clock": "ack", "value": -1, "unit": "hours"}]}, "positive"),
        ({"time_limits": [{"clock": "ack", "value": 1, "unit": "hours"}]}, "no resolve time limit"),
        ({"states_extra": True}, "unreachable"),
        ({"dead_end": True}, "dead end"),
    ],
)
def test_broken_definitions_are_refused_at_load(patch: dict, message: str) -> None:
    import yaml

    from workflows.definition import DEFINITIONS_DIR

    raw = yaml.safe_load((DEFINITIONS_DIR / "four_stage.yaml").read_text(encoding="utf-8"))
    if patch.pop("states_extra", False):
        raw["states"].append({"name": "limbo", "zh": "无处"})
    if patch.pop("dead_end", False):
        raw["states"].append({"name": "limbo", "zh": "无处"})
        raw["transitions"].append(
            {"trigger": "park", "source": "grid_discovery", "dest": "limbo", "roles": ["grid_worker"]}
        )
    raw.update(patch)
    with pytest.raises(DefinitionError, match=message):
        parse_definition(raw)


def test_mermaid_diagram_draws_the_workflow() -> None:
    diagram = mermaid(DEFINITIONS[("four_stage", 1)])
    assert diagram.startswith("stateDiagram-v2")
    assert "grid_discovery --> community_call: call_community" in diagram
    assert "suspended --> grid_discovery: resume" in diagram


def test_incidents_keep_their_workflow_version() -> None:
    """A later edit of a definition is a new version; a running case keeps using the one it started with."""
    import yaml

    from workflows.definition import DEFINITIONS_DIR

    raw = yaml.safe_load((DEFINITIONS_DIR / "four_stage.yaml").read_text(encoding="utf-8"))
    raw["version"] = 2
    raw["time_limits"] = [dict(r, value=r["value"] * 2) for r in raw["time_limits"]]
    v2 = parse_definition(raw)
    inc = case_in("grid_discovery", "grid")
    assert inc.workflow_version == 1
    ack_v1 = next(d for d in inc.deadlines if d.clock == "ack")
    ack_v2 = next(
        d
        for d in start_clocks(replace(inc, workflow_version=2), Context(v2, WorkflowMachine(v2), NOW), NOW)
        if d.clock == "ack"
    )
    assert ack_v2.due_at - NOW == 2 * (ack_v1.due_at - NOW)


def test_when_nobody_is_on_duty_the_clocks_wait_for_the_next_shift_if_the_workflow_says_so() -> None:
    import yaml

    from dispatch.duty import DutyBook, Roster
    from workflows.definition import DEFINITIONS_DIR

    bj = ZoneInfo("Asia/Shanghai")
    office = Roster(
        GRID[:12],
        ("c1", "c2"),
        datetime(2026, 1, 1, 8, 0, tzinfo=bj),
        timedelta(hours=12),
        window=(time(8, 0), time(20, 0)),
    )
    night = datetime(2026, 11, 30, 22, 0, tzinfo=bj)
    raw = yaml.safe_load((DEFINITIONS_DIR / "four_stage.yaml").read_text(encoding="utf-8"))
    for wait in (False, True):
        raw["duty"] = {"wait_for_shift": wait}
        d = parse_definition(raw)
        c = Context(d, WorkflowMachine(d), night, duty=DutyBook({office.unit: office}))
        out = decide(case_in("grid_discovery", "grid"), Command("call_community"), ACTORS["grid_worker"], c)
        notice = next(e for e in out.events if e.type == "incident.notified")
        ack = next(x for x in out.incident.deadlines if x.clock == "ack")
        assert notice.data["on_duty"] is None
        if wait:
            assert ack.started_at == datetime(2026, 12, 1, 8, 0, tzinfo=bj)  # the office opens at 08:00
            assert notice.data["next_shift_member"] in ("c1", "c2")
        else:
            assert ack.started_at == night


def test_only_severe_cases_may_skip_tiers() -> None:
    normal = case_in("community_call", "community")
    with pytest.raises(Refusal) as refused:
        decide(normal, Command("skip_escalate", note="x"), ACTORS["community_staff"], ctx())
    assert refused.value.status == 409 and "越级" in refused.value.detail
    out = decide(
        normal.evolve(severity="critical"),
        Command("skip_escalate", note="燃气泄漏"),
        ACTORS["community_staff"],
        ctx(),
    )
    assert (out.incident.state, out.incident.tier) == ("tiered_response", "county")
    assert [(e.reason, e.from_tier, e.to_tier) for e in out.log] == [("severity", "community", "county")]
