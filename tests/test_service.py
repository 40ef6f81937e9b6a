"""The dispatch service on a real SQLite file with an injected clock: the whole loop, refusals, timers."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select, text

from dispatch import models as m
from dispatch.bootstrap import Container
from dispatch.clock import FakeClock
from dispatch.domain import Command, Refusal
from dispatch.queries import events_after, incident_detail, verify_escalation_log
from tests.conftest import Demo, advance, fire_due


def act(c: Container, demo: Demo, incident_id: str, who: str, action: str, **kw: Any) -> dict[str, Any]:
    return c.service.act(incident_id, Command(action=action, **kw), demo.actor(who))


def detail(c: Container, demo: Demo, incident_id: str) -> dict[str, Any]:
    view = incident_detail(c.db, demo.actor("admin"), incident_id, c.tree, c.clock.now())
    assert view is not None
    return view


def test_full_path_from_report_to_rating(container: Container, demo: Demo, clock: FakeClock) -> None:
    c = container
    created = c.service.submit_report(demo.report(), demo.actor("dispatcher"))
    iid = created["id"]
    assert created["grid"]["code"] == demo.grid
    assert [u["level"] for u in created["jurisdiction"]] == ["county", "township", "community", "grid"]
    assert (created["state"], created["tier"], created["accepted"]) == ("grid_discovery", "grid", False)

    # Nobody accepts: at 80 % of the 30-minute ack limit a warning (催办), at 100 % escalation to the community.
    assert advance(c, clock, minutes=23) == 0
    assert advance(c, clock, minutes=1) == 1
    assert detail(c, demo, iid)["light"] == "yellow"
    assert advance(c, clock, minutes=7) == 1
    view = detail(c, demo, iid)
    assert (view["state"], view["tier"]) == ("community_call", "community")
    assert [(e["reason"], e["actor"], e["to"]["tier"]) for e in view["escalations"]] == [
        ("urge", "system", "grid"),
        ("ack_timeout", "system", "community"),
        ("supervise", "system", "grid"),
    ]
    assert view["escalations"][1]["late_seconds"] == pytest.approx(60, abs=1)

    act(c, demo, iid, "community", "escalate", note="需要街道协调")
    act(c, demo, iid, "township", "accept")
    act(c, demo, iid, "township", "dispatch", lead="360102.urban", co=("360102.housing",))
    view = detail(c, demo, iid)
    assert view["state"] == "coordinated_handling"
    assert {(d["department"], d["role"], d["status"]) for d in view["departments"]} == {
        ("360102.urban", "lead", "dispatched"),
        ("360102.housing", "co", "dispatched"),
    }
    act(c, demo, iid, "dept_urban", "dept_accept")
    act(c, demo, iid, "dept_housing", "dept_accept")
    act(c, demo, iid, "dept_urban", "dept_complete", note="已清运")
    assert detail(c, demo, iid)["state"] == "coordinated_handling"
    act(c, demo, iid, "dept_housing", "dept_complete", note="已修缮")
    assert detail(c, demo, iid)["state"] == "verification"
    act(c, demo, iid, "grid", "verify_pass")
    act(c, demo, iid, "supervisor", "rate", rating=5)

    view = detail(c, demo, iid)
    assert (view["state"], view["rating"]) == ("closed", 5)
    assert [t["action"] for t in view["timeline"]] == [
        "report",
        "warning",
        "auto_escalate",
        "escalate",
        "accept",
        "dispatch",
        "dept_accept",
        "dept_accept",
        "dept_complete",
        "dept_complete",
        "verify_pass",
        "rate",
    ]
    events = events_after(c.db, 0)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1))
    assert [e["type"] for e in events][:6] == [
        "incident.created",
        "incident.warning",
        "incident.escalated",
        "incident.notified",  # the community's duty officer is named
        "incident.escalated",
        "incident.notified",  # …and the street centre's
    ]
    assert events[-1]["type"] == "incident.rated"
    assert all(e["jurisdiction"] == [u["code"] for u in view["jurisdiction"]] for e in events)
    assert [e["reason"] for e in view["escalations"]] == ["urge", "ack_timeout", "supervise", "manual"]
    assert verify_escalation_log(c.db).ok
    # A closed case has no clocks left running.
    with c.db.read() as s:
        assert s.execute(select(m.DeadlineRow).where(m.DeadlineRow.status == "pending")).first() is None


def test_escalation_climbs_every_tier_then_supervises_at_county(
    container: Container, demo: Demo, clock: FakeClock
) -> None:
    c = container
    iid = c.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    advance(c, clock, minutes=31)  # grid → community (ack 30 min)
    advance(c, clock, minutes=61)  # community → township (ack 1 h)
    advance(c, clock, hours=2, minutes=1)  # township → county (ack 2 h)
    view = detail(c, demo, iid)
    assert (view["state"], view["tier"]) == ("tiered_response", "county")
    advance(c, clock, hours=1, minutes=1)  # county ack 1 h: nowhere to climb → 督办 + alarm
    advance(c, clock, minutes=31)  # repeated 督办 every 30 min
    view = detail(c, demo, iid)
    reasons = [(e["reason"], e["to"]["tier"]) for e in view["escalations"] if e["reason"] != "urge"]
    assert reasons == [
        ("ack_timeout", "community"),
        ("supervise", "grid"),
        ("ack_timeout", "township"),
        ("supervise", "community"),
        ("ack_timeout", "county"),
        ("supervise", "township"),
        ("supervise", "county"),  # county ack ran out: nowhere to climb
        ("supervise", "county"),  # …repeated every 30 minutes
    ]
    assert view["light"] == "red"
    climbs = [e["to"]["unit"] for e in view["escalations"] if e["reason"] == "ack_timeout"]
    assert climbs == [demo.grid[:12], demo.grid[:9], demo.grid[:6]]
    assert [e["reason"] for e in view["escalations"]].count("urge") == 4  # a yellow warning before each red


def test_accepting_stops_the_ack_clock_but_not_the_resolve_clock(
    container: Container, demo: Demo, clock: FakeClock
) -> None:
    c = container
    iid = c.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    act(c, demo, iid, "grid", "accept")
    assert advance(c, clock, minutes=45) == 0
    assert detail(c, demo, iid)["state"] == "grid_discovery"
    # The resolve limit is one working day (390 working minutes, 08:30–12:00 and 14:30–17:30): reported
    # Monday 17:00 Beijing time: 30 minutes that day, 210 + 150 on Tuesday → Tuesday 17:00 (09:00 UTC).
    deadline = next(d for d in detail(c, demo, iid)["deadlines"] if d["clock"] == "resolve")
    assert deadline["due_at"] == "2026-12-01T09:00:00+00:00"
    advance(c, clock, hours=24)
    view = detail(c, demo, iid)
    assert view["state"] == "community_call"
    assert [e["reason"] for e in view["escalations"]] == ["urge", "resolve_timeout", "supervise"]


def test_a_timer_whose_case_moved_on_does_nothing(container: Container, demo: Demo, clock: FakeClock) -> None:
    c = container
    iid = c.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    with c.db.read() as s:
        ack_id = s.execute(select(m.DeadlineRow.id).where(m.DeadlineRow.clock == "ack")).scalar_one()
    act(c, demo, iid, "grid", "call_community")
    clock.advance(__import__("datetime").timedelta(minutes=31))
    assert c.service.fire_deadline(ack_id) is False
    view = detail(c, demo, iid)
    assert [e["reason"] for e in view["escalations"]] == ["manual"]


def test_each_deadline_takes_effect_at_most_once(container: Container, demo: Demo, clock: FakeClock) -> None:
    c = container
    c.service.submit_report(demo.report(), demo.actor("dispatcher"))
    with c.db.read() as s:
        ack_id = s.execute(select(m.DeadlineRow.id).where(m.DeadlineRow.clock == "ack")).scalar_one()
    clock.advance(__import__("datetime").timedelta(minutes=31))
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(c.service.fire_deadline(ack_id))) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    with c.db.read() as s:
        reasons = [e.reason for e in s.execute(select(m.EscalationEntry)).scalars()]
        assert reasons.count("ack_timeout") == 1
        assert len([e for e in events_after(c.db, 0) if e["type"] == "incident.escalated"]) == 1


def test_a_grid_workers_own_report_starts_accepted(container: Container, demo: Demo) -> None:
    view = container.service.submit_report(demo.report(source="grid_worker"), demo.actor("grid"))
    assert (view["state"], view["accepted"]) == ("grid_discovery", True)
    assert [d["clock"] for d in view["deadlines"]] == ["resolve"]


@pytest.mark.parametrize(
    ("severity", "state", "tier", "logged"),
    [
        ("normal", "grid_discovery", "grid", []),
        ("urgent", "grid_discovery", "grid", []),
        ("major", "tiered_response", "township", ["severity"]),
        ("critical", "tiered_response", "county", ["severity"]),
    ],
)
def test_severity_sets_the_entry_stage(
    container: Container, demo: Demo, severity: str, state: str, tier: str, logged: list[str]
) -> None:
    view = container.service.submit_report(demo.report(severity=severity), demo.actor("dispatcher"))
    assert (view["state"], view["tier"]) == (state, tier)
    assert [e["reason"] for e in detail(container, demo, view["id"])["escalations"]] == logged


def test_reports_outside_every_grid_go_to_triage_and_can_be_assigned(
    container: Container, demo: Demo
) -> None:
    view = container.service.submit_report(demo.report("outside"), demo.actor("dispatcher"))
    assert (view["state"], view["tier"], view["grid"]["code"]) == ("triage", "county", None)
    with pytest.raises(Refusal) as bad:
        act(container, demo, view["id"], "dispatcher", "assign_grid", target="360102999999999")
    assert bad.value.status == 422
    after = act(container, demo, view["id"], "dispatcher", "assign_grid", target=demo.grid2)
    assert (after["state"], after["grid"]["code"], after["grid"]["generation"]) == (
        "grid_discovery",
        demo.grid2,
        container.tree.generation,
    )


def test_illegal_and_forbidden_actions_change_nothing(container: Container, demo: Demo) -> None:
    c = container
    iid = c.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    before = detail(c, demo, iid)
    cases = [
        ("grid", "verify_pass", {}, 409),  # not in verification
        ("grid", "escalate", {}, 409),  # not an action of grid_discovery
        ("community", "accept", {}, 409),  # the case is at grid tier: only its grid worker accepts
        ("grid2", "accept", {}, 404),  # another grid's worker may not even see it
        ("township", "call_community", {}, 403),  # wrong role for the stage
        ("grid", "reject", {}, 422),  # reject needs a reason
        ("grid", "fly_away", {}, 409),
    ]
    for who, action, kw, status in cases:
        with pytest.raises(Refusal) as refused:
            act(c, demo, iid, who, action, **kw)
        assert refused.value.status == status, (who, action, refused.value.detail)
    after = detail(c, demo, iid)
    assert (after["version"], after["state"], after["timeline"]) == (
        before["version"],
        before["state"],
        before["timeline"],
    )
    assert len(events_after(c.db, 0)) == 1


def test_accept_twice_is_refused_with_a_reason(container: Container, demo: Demo) -> None:
    iid = container.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    act(container, demo, iid, "grid", "accept")
    with pytest.raises(Refusal) as twice:
        act(container, demo, iid, "grid", "accept")
    assert twice.value.status == 409
    assert "already accepted" in twice.value.detail


def test_stale_expected_version_is_a_conflict(container: Container, demo: Demo) -> None:
    iid = container.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    act(container, demo, iid, "grid", "accept")
    with pytest.raises(Refusal) as stale:
        container.service.act(iid, Command("call_community"), demo.actor("grid"), expected_version=1)
    assert (stale.value.status, stale.value.code) == (409, "stale_version")


def test_two_conflicting_actions_at_once_one_wins(container: Container, demo: Demo) -> None:
    iid = container.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def attempt(action: str) -> None:
        barrier.wait()
        try:
            outcomes.append(
                container.service.act(iid, Command(action, note="x"), demo.actor("grid"), expected_version=1)[
                    "state"
                ]
            )
        except Refusal as r:
            outcomes.append(r.status)

    threads = [threading.Thread(target=attempt, args=(a,)) for a in ("call_community", "resolve")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, outcomes))[0] == "409" and len([o for o in outcomes if o == 409]) == 1
    view = detail(container, demo, iid)
    assert view["version"] == 2 and len(view["timeline"]) == 2


def test_verify_fail_returns_to_the_handling_stage_and_counts_rework(
    container: Container, demo: Demo
) -> None:
    c = container
    iid = c.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    act(c, demo, iid, "grid", "call_community")
    act(c, demo, iid, "community", "resolve")
    view = act(c, demo, iid, "grid", "verify_fail", note="垃圾还在")
    assert (view["state"], view["tier"], view["rework_count"]) == ("community_call", "community", 1)
    assert detail(c, demo, iid)["escalations"][-1]["reason"] == "rework"


def test_department_return_goes_back_to_the_dispatching_tier(container: Container, demo: Demo) -> None:
    c = container
    iid = c.service.submit_report(demo.report(severity="major"), demo.actor("dispatcher"))["id"]
    act(c, demo, iid, "township", "dispatch", lead="360102.urban")
    with pytest.raises(Refusal) as other:
        act(c, demo, iid, "dept_police", "dept_accept")
    assert other.value.status == 404  # not dispatched to the police: they cannot even see it
    view = act(c, demo, iid, "dept_urban", "dept_return", note="不属于城管职责")
    assert (view["state"], view["tier"], view["departments"]) == ("tiered_response", "township", [])
    assert detail(c, demo, iid)["escalations"][-1]["reason"] == "dept_return"


def test_department_overdue_is_logged_once(container: Container, demo: Demo, clock: FakeClock) -> None:
    c = container
    iid = c.service.submit_report(demo.report(severity="major"), demo.actor("dispatcher"))["id"]
    act(c, demo, iid, "township", "dispatch", lead="360102.urban", co=("360102.water",))
    act(c, demo, iid, "dept_urban", "dept_accept")
    advance(c, clock, hours=2, minutes=1)  # water did not accept within 2 h
    advance(c, clock, hours=1)
    log = detail(c, demo, iid)["escalations"]
    assert [e["to"]["unit"] for e in log if e["reason"] == "dept_timeout"] == ["360102.water"]
    assert ("supervise", "360102.water") in [(e["reason"], e["to"]["unit"]) for e in log]
    assert ("urge", "360102.water") in [(e["reason"], e["to"]["unit"]) for e in log]


def test_reopen_and_merge(container: Container, demo: Demo) -> None:
    c = container
    first = c.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    dup = c.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    merged = act(c, demo, dup, "grid", "merge", target=first)
    assert (merged["state"], merged["merged_into"]) == ("merged", first)
    assert events_after(c.db, 0)[-1]["type"] == "incident.merged"
    act(c, demo, first, "grid", "resolve")
    act(c, demo, first, "grid", "verify_pass")
    reopened = act(c, demo, first, "supervisor", "reopen", note="群众再次反映")
    assert (reopened["state"], reopened["tier"]) == ("tiered_response", "county")


def test_idempotency_key_returns_the_first_result(container: Container, demo: Demo) -> None:
    a = container.service.submit_report(demo.report(), demo.actor("dispatcher"), "key-1")
    b = container.service.submit_report(demo.report(), demo.actor("dispatcher"), "key-1")
    assert a == b
    with container.db.read() as s:
        assert len(s.execute(select(m.Incident)).all()) == 1


def test_tampering_with_the_escalation_log_is_detected(
    container: Container, demo: Demo, clock: FakeClock, data_dir: Any
) -> None:
    import os
    import subprocess
    import sys

    c = container
    for _ in range(3):
        c.service.submit_report(demo.report(), demo.actor("dispatcher"))
    advance(c, clock, minutes=31)
    assert verify_escalation_log(c.db).ok and verify_escalation_log(c.db).entries == 9
    with c.db.write() as s:
        s.execute(text("UPDATE escalation_log SET reason = 'manual' WHERE id = 2"))
    check = verify_escalation_log(c.db)
    assert (check.ok, check.first_broken_id) == (False, 2)
    # …and the supervisor's command says so, naming the entry.
    env = {**os.environ, "GRIDDISPATCH_DATA_DIR": str(data_dir)}
    cli = subprocess.run(
        [sys.executable, "-m", "dispatch.cli", "log", "verify"], env=env, capture_output=True, text=True
    )
    assert cli.returncode == 1 and "escalation log broken at entry 2" in cli.stdout


def test_timer_deadlines_survive_a_restart(
    container: Container, demo: Demo, clock: FakeClock, data_dir: Any
) -> None:
    """A deadline stored before a restart fires after it: the table is the truth, not the scheduler."""
    from dispatch.bootstrap import build
    from dispatch.settings import Settings

    container.service.submit_report(demo.report(), demo.actor("dispatcher"))
    container.db.dispose()
    clock.advance(__import__("datetime").timedelta(hours=1))
    again = build(Settings(data_dir=data_dir), clock=clock)
    try:
        assert fire_due(again) == 2  # the warning and the escalation, both passed while it was down
        assert fire_due(again) == 0
    finally:
        again.db.dispose()


def test_extension_and_suspension_persist_and_move_the_clocks(
    container: Container, demo: Demo, clock: FakeClock
) -> None:
    c = container
    iid = c.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    act(c, demo, iid, "grid", "call_community")
    resolve_due = next(d["due_at"] for d in detail(c, demo, iid)["deadlines"] if d["clock"] == "resolve")
    c.service.act(
        iid,
        Command("request_extension", note="需物业配合", extension=(1, "work_days")),
        demo.actor("community"),
    )
    with pytest.raises(Refusal) as wrong_tier:
        act(c, demo, iid, "dispatcher", "approve_extension")
    assert wrong_tier.value.status == 409  # the tier above the community decides: the township
    act(c, demo, iid, "township", "approve_extension")
    extended = next(d["due_at"] for d in detail(c, demo, iid)["deadlines"] if d["clock"] == "resolve")
    assert extended > resolve_due

    act(c, demo, iid, "community", "request_suspend", note="当事人住院")
    act(c, demo, iid, "township", "approve_suspend")
    assert detail(c, demo, iid)["state"] == "suspended"
    with c.db.read() as s:  # a suspended case has no running timers
        assert (
            s.execute(
                select(m.DeadlineRow).where(
                    m.DeadlineRow.incident_id == iid, m.DeadlineRow.status == "pending"
                )
            ).first()
            is None
        )
    assert advance(c, clock, days=10) == 0  # nothing fires while suspended
    view = act(c, demo, iid, "community", "resume")
    assert (view["state"], view["tier"]) == ("community_call", "community")
    ack = next(d for d in view["deadlines"] if d["clock"] == "ack")
    assert ack["due_at"] > clock.now().isoformat()  # the ack clock resumed with the time it had left


def test_emergency_reports_run_the_emergency_workflow(container: Container, demo: Demo) -> None:
    view = container.service.submit_report(
        demo.report(category="emergency", severity="critical"), demo.actor("grid")
    )
    assert view["workflow"] == {"name": "emergency", "version": 1}
    assert (view["state"], view["tier"]) == ("tiered_response", "county")
    events = events_after(container.db, 0)
    assert events[0]["data"]["alarm"] is True


def test_escalation_notifies_whoever_is_on_duty(container: Container, demo: Demo, clock: FakeClock) -> None:
    c = container
    iid = c.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]  # Monday 17:00 Beijing
    act(c, demo, iid, "grid", "call_community")
    notices = [e for e in events_after(c.db, 0) if e["type"] == "incident.notified"]
    assert [(n["data"]["unit"], n["data"]["on_duty"]) for n in notices] == [(demo.grid[:12], "community")]
    second = c.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    clock.advance(__import__("datetime").timedelta(hours=4))  # 21:00: the night shift
    act(c, demo, second, "grid", "call_community")
    notices = [e for e in events_after(c.db, 0) if e["type"] == "incident.notified"]
    assert notices[-1]["data"]["on_duty"] == "community_b"


def test_duplicates_come_back_with_the_report(container: Container, demo: Demo) -> None:
    first = container.service.submit_report(demo.report(), demo.actor("grid"))
    assert first["duplicates"] == []
    again = container.service.submit_report(demo.report(), demo.actor("grid"))
    assert [d["id"] for d in again["duplicates"]] == [first["id"]]
    assert again["duplicates"][0]["distance_m"] == 0
    other = container.service.submit_report(demo.report(category="dispute"), demo.actor("grid"))
    assert other["duplicates"] == []


def test_tampering_with_a_case_timeline_is_detected_and_the_cli_says_so(
    container: Container, demo: Demo, data_dir: Any
) -> None:
    import os
    import subprocess
    import sys

    from dispatch.queries import verify_timelines

    c = container
    iid = c.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    act(c, demo, iid, "grid", "accept")
    act(c, demo, iid, "grid", "resolve", note="已清理")
    assert verify_timelines(c.db)[0].ok
    env = {**os.environ, "GRIDDISPATCH_DATA_DIR": str(data_dir)}
    cli = [sys.executable, "-m", "dispatch.cli", "log", "verify"]
    assert subprocess.run(cli, env=env, capture_output=True, text=True).returncode == 0
    with c.db.write() as s:
        s.execute(text("UPDATE timeline SET note = '从未处理' WHERE action = 'resolve'"))
    check, case = verify_timelines(c.db)
    assert (check.ok, case) == (False, iid)
    result = subprocess.run(cli, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "broken" in result.stdout and iid in result.stdout
