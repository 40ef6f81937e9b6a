"""The four_stage definition against SPEC §3, pair by pair, on the pure engine (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatch.domain import Actor, Command, DeptAssignment, Incident, Refusal
from dispatch.engine import compute_deadlines, decide, light, on_deadline
from workflows.definition import DefinitionError, load_all, parse_definition
from workflows.machine import WorkflowMachine, mermaid

DEFINITION = load_all()[("four_stage", 1)]
MACHINE = WorkflowMachine(DEFINITION)
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
GRID = "360102001001001"

# SPEC §3, written out independently of the YAML: which actions leave (or act in) each state.
SPEC_ACTIONS = {
    "triage": {"assign_grid", "reject"},
    "grid_discovery": {"accept", "resolve", "call_community", "reject", "merge"},
    "community_call": {"accept", "resolve", "escalate", "return_to_grid", "reject"},
    "tiered_response": {"accept", "resolve", "escalate", "dispatch"},
    "coordinated_handling": {"dept_accept", "dept_complete", "dept_return"},
    "verification": {"verify_pass", "verify_fail"},
    "closed": {"rate", "reopen"},
    "rejected": set(),
    "merged": set(),
}
SIDE = {"comment", "urge", "supervise"}
ACTOR_FOR_STATE = {
    "triage": Actor("d", "county_dispatcher", "360102"),
    "grid_discovery": Actor("g", "grid_worker", GRID),
    "community_call": Actor("c", "community_staff", GRID[:12]),
    "tiered_response": Actor("t", "township_staff", GRID[:9]),
    "coordinated_handling": Actor("u", "department_staff", None, "360102.urban"),
    "verification": Actor("g", "grid_worker", GRID),
    "closed": Actor("s", "supervisor", "360102"),
    "rejected": Actor("s", "supervisor", "360102"),
    "merged": Actor("s", "supervisor", "360102"),
}
TIER_FOR_STATE = {
    "triage": "county",
    "grid_discovery": "grid",
    "community_call": "community",
    "tiered_response": "township",
    "coordinated_handling": "township",
    "verification": "grid",
    "closed": "grid",
    "rejected": "grid",
    "merged": "grid",
}


def case_in(state: str) -> Incident:
    inc = Incident(
        id="360102-20261130-00001",
        county="360102",
        workflow="four_stage",
        workflow_version=1,
        source="hotline",
        category="sanitation",
        severity="normal",
        state=state,
        tier=TIER_FOR_STATE[state],
        grid_code=None if state == "triage" else GRID,
        grid_generation=1,
        lon=115.9,
        lat=28.7,
        created_at=NOW,
        stage_entered_at=NOW,
        handled_state="community_call" if state == "verification" else None,
        handled_tier="community" if state == "verification" else None,
        departments=(DeptAssignment("360102.urban", "lead"),) if state == "coordinated_handling" else (),
        closed_at=NOW if state == "closed" else None,
    )
    return inc.evolve(deadlines=compute_deadlines(inc, DEFINITION))


def full_command(action: str) -> Command:
    return Command(
        action=action,
        note="原因说明",
        target=GRID if action == "assign_grid" else "360102-20261130-00009",
        lead="360102.urban",
        rating=4,
    )


ALL_ACTIONS = sorted(set(DEFINITION.actions) - {"auto_escalate"})


@pytest.mark.parametrize("state", list(SPEC_ACTIONS))
@pytest.mark.parametrize("action", ALL_ACTIONS)
def test_every_state_action_pair_follows_spec(state: str, action: str) -> None:
    incident = case_in(state)
    actor = Actor("s", "supervisor", "360102") if action in SIDE else ACTOR_FOR_STATE[state]
    legal = action in SPEC_ACTIONS[state] or (action in SIDE and not DEFINITION.is_final(state))
    if legal:
        out = decide(incident, full_command(action), actor, DEFINITION, MACHINE, NOW)
        assert out.incident.version == incident.version + 1
        assert len(out.timeline) == 1 and len(out.events) == 1
    else:
        with pytest.raises(Refusal) as refused:
            decide(incident, full_command(action), actor, DEFINITION, MACHINE, NOW)
        assert refused.value.status == 409


def test_definition_covers_every_spec_action_and_nothing_more() -> None:
    declared: dict[str, set[str]] = {s: set() for s in DEFINITION.states}
    for t in DEFINITION.transitions:
        if t.trigger != "auto_escalate":
            declared[t.source].add(t.trigger)
    assert declared == SPEC_ACTIONS


@pytest.mark.parametrize(
    ("state", "tier", "to"),
    [
        ("grid_discovery", "grid", ("community_call", "community")),
        ("community_call", "community", ("tiered_response", "township")),
        ("tiered_response", "township", ("tiered_response", "county")),
    ],
)
def test_red_light_climbs_one_tier(state: str, tier: str, to: tuple[str, str]) -> None:
    inc = case_in(state).evolve(tier=tier)
    inc = inc.evolve(deadlines=compute_deadlines(inc, DEFINITION))
    ack = next(d for d in inc.deadlines if d.clock == "ack")
    out = on_deadline(inc, "ack", ack.due_at, DEFINITION, MACHINE, ack.due_at + timedelta(seconds=5))
    assert out is not None
    assert (out.incident.state, out.incident.tier) == to
    assert [(e.reason, e.actor, e.late_seconds) for e in out.log] == [("ack_timeout", "system", 5.0)]


def test_a_clock_that_no_longer_runs_does_nothing() -> None:
    inc = case_in("grid_discovery")
    assert (
        on_deadline(inc, "ack", NOW + timedelta(hours=5), DEFINITION, MACHINE, NOW + timedelta(hours=6))
        is None
    )


def test_traffic_light_thresholds() -> None:
    inc = case_in("grid_discovery")  # ack limit 30 minutes
    assert light(inc, NOW + timedelta(minutes=23)) == "green"
    assert light(inc, NOW + timedelta(minutes=24)) == "yellow"
    assert light(inc, NOW + timedelta(minutes=30)) == "red"


def test_most_specific_time_limit_wins() -> None:
    limit = DEFINITION.time_limit
    assert (
        limit(
            clock="ack", stage="grid_discovery", tier="grid", category="sanitation", severity="normal"
        ).value
        == 30
    )
    assert (
        limit(clock="ack", stage="grid_discovery", tier="grid", category="emergency", severity="normal").value
        == 5
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
    ],
)
def test_broken_definitions_are_refused_at_load(patch: dict, message: str) -> None:
    import yaml

    from workflows.definition import DEFINITIONS_DIR

    raw = yaml.safe_load((DEFINITIONS_DIR / "four_stage.yaml").read_text(encoding="utf-8"))
    raw.update(patch)
    with pytest.raises(DefinitionError, match=message):
        parse_definition(raw)


def test_mermaid_diagram_draws_every_transition() -> None:
    diagram = mermaid(DEFINITION)
    assert diagram.startswith("stateDiagram-v2")
    assert "grid_discovery --> community_call: call_community" in diagram
    assert diagram.count("-->") >= len(DEFINITION.transitions)
