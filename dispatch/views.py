"""How a case looks from outside: summaries for events and lists, the full view for one case. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dispatch.domain import Actor, Incident
from dispatch.engine import light
from grids.directory import JurisdictionTree

STATE_ZH = {
    "triage": "待分拣",
    "grid_discovery": "网格发现",
    "community_call": "社区呼叫",
    "tiered_response": "分级响应",
    "coordinated_handling": "协同处置",
    "verification": "核查",
    "closed": "结案",
    "rejected": "不予受理",
    "merged": "已合并",
    "suspended": "挂账",
}


def mask_phone(phone: str | None) -> str | None:
    """138****1234: enough to recognise, not enough to call."""
    if not phone:
        return phone
    if len(phone) <= 7:
        return phone[:1] + "*" * (len(phone) - 1)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def mask_name(name: str | None) -> str | None:
    if not name:
        return name
    return name[0] + "*" * (len(name) - 1)


def may_see_personal(actor: Actor, incident: Incident) -> bool:
    """Reporter details are for the case's current handlers, the county dispatcher and admins."""
    if actor.role in ("admin", "county_dispatcher", "system") or actor.username == incident.reporter_user:
        return True
    if actor.role == "department_staff":
        return any(d.department == actor.department for d in incident.departments)
    return actor.unit_code is not None and actor.unit_code == incident.unit_at(incident.tier)


def incident_summary(inc: Incident, now: datetime) -> dict[str, Any]:
    """The part of a case every event carries, so a screen can draw it without asking."""
    due = min((d.due_at for d in inc.deadlines if d.clock != "supervise"), default=None)
    return {
        "id": inc.id,
        "state": inc.state,
        "tier": inc.tier,
        "category": inc.category,
        "severity": inc.severity,
        "grid": inc.grid_code,
        "lon": inc.lon,
        "lat": inc.lat,
        "light": light(inc, now),
        "deadline": due.isoformat() if due else None,
        "departments": [d.department for d in inc.departments],
        "version": inc.version,
    }


def incident_view(
    inc: Incident, report: dict[str, Any], tree: JurisdictionTree | None, now: datetime, actor: Actor
) -> dict[str, Any]:
    personal = may_see_personal(actor, inc)
    path = (
        tree.path(inc.grid_code)
        if tree and inc.grid_code
        else [{"code": inc.county, "name": tree.name(inc.county) if tree else None, "level": "county"}]
    )
    return {
        "id": inc.id,
        "state": inc.state,
        "state_zh": STATE_ZH.get(inc.state, inc.state),
        "tier": inc.tier,
        "category": inc.category,
        "severity": inc.severity,
        "source": inc.source,
        "location": {"lon": inc.lon, "lat": inc.lat},
        "address": report.get("address"),
        "description": report.get("description"),
        "photos": report.get("photos", []),
        "reporter": {
            "name": report.get("reporter_name") if personal else mask_name(report.get("reporter_name")),
            "phone": report.get("reporter_phone") if personal else mask_phone(report.get("reporter_phone")),
            "user": inc.reporter_user,
        },
        "grid": {
            "code": inc.grid_code,
            "generation": inc.grid_generation,
            "name": tree.name(inc.grid_code) if tree and inc.grid_code else None,
            "near_boundary": inc.near_boundary,
        },
        "jurisdiction": path,
        "accepted": inc.accepted,
        "departments": [
            {"department": d.department, "role": d.role, "status": d.status} for d in inc.departments
        ],
        "deadlines": [
            {
                "clock": d.clock,
                "started_at": d.started_at.isoformat(),
                "due_at": d.due_at.isoformat(),
                "warn_at": d.warn_at.isoformat() if d.warn_at else None,
                "unit": d.unit,
                "limit_minutes": d.limit_minutes,
            }
            for d in inc.deadlines
        ],
        "light": light(inc, now),
        "overdue": sorted(c for c in inc.overdue if not c.startswith("warn:")),
        "warned": sorted(c.removeprefix("warn:") for c in inc.overdue if c.startswith("warn:")),
        "pending_request": inc.pending_request,
        "suspended": {"since": inc.suspension.since.isoformat(), "from_state": inc.suspension.state}
        if inc.suspension
        else None,
        "rework_count": inc.rework_count,
        "rating": inc.rating,
        "merged_into": inc.merged_into,
        "closed_at": inc.closed_at.isoformat() if inc.closed_at else None,
        "created_at": inc.created_at.isoformat(),
        "stage_entered_at": inc.stage_entered_at.isoformat(),
        "workflow": {"name": inc.workflow, "version": inc.workflow_version},
        "version": inc.version,
    }
