"""Domain values <-> the JSON kept in incident columns (clocks, suspension). Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dispatch.clock import utc
from dispatch.domain import Deadline, Suspension


def _time(raw: str | None) -> datetime | None:
    return utc(datetime.fromisoformat(raw)) if raw else None


def deadline_to_json(d: Deadline) -> dict[str, Any]:
    return {
        "clock": d.clock,
        "started_at": d.started_at.isoformat(),
        "due_at": d.due_at.isoformat(),
        "unit": d.unit,
        "limit_minutes": d.limit_minutes,
        "warn_at": d.warn_at.isoformat() if d.warn_at else None,
    }


def deadline_from_json(raw: dict[str, Any]) -> Deadline:
    started, due = _time(raw["started_at"]), _time(raw["due_at"])
    assert started is not None and due is not None
    return Deadline(
        raw["clock"],
        started,
        due,
        raw.get("unit", "minutes"),
        float(raw.get("limit_minutes", (due - started).total_seconds() / 60)),
        _time(raw.get("warn_at")),
    )


def suspension_to_json(s: Suspension | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "since": s.since.isoformat(),
        "state": s.state,
        "tier": s.tier,
        "accepted": s.accepted,
        "stage_entered_at": s.stage_entered_at.isoformat(),
        "deadlines": [deadline_to_json(d) for d in s.deadlines],
        "overdue": sorted(s.overdue),
        "next_supervise_at": s.next_supervise_at.isoformat() if s.next_supervise_at else None,
    }


def suspension_from_json(raw: dict[str, Any] | None) -> Suspension | None:
    if not raw:
        return None
    since, entered = _time(raw["since"]), _time(raw["stage_entered_at"])
    assert since is not None and entered is not None
    return Suspension(
        since=since,
        state=raw["state"],
        tier=raw["tier"],
        accepted=bool(raw["accepted"]),
        stage_entered_at=entered,
        deadlines=tuple(deadline_from_json(d) for d in raw["deadlines"]),
        overdue=frozenset(raw.get("overdue", ())),
        next_supervise_at=_time(raw.get("next_supervise_at")),
    )
