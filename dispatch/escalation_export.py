"""The escalation log for supervisors: the department filter and the CSV export (SPEC §4 `?format=csv`).

Same visibility and filters as `queries.escalations`, plus `department` (cases dispatched to it, 主办 or 协办),
and a streaming CSV that pages through the whole selection by id instead of holding it in memory.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select

from dispatch import models as m
from dispatch.db import Database
from dispatch.domain import Actor
from dispatch.queries import _scope, escalation_dict

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
REASON_ZH = {
    "ack_timeout": "响应超时",
    "resolve_timeout": "处置超时",
    "manual": "人工上报",
    "severity": "越级上报",
    "rework": "返工",
    "dept_timeout": "部门超时",
    "dept_return": "部门退回",
    "supervise": "督办",
    "urge": "催办",
}
CSV_COLUMNS = (
    ("id", "序号"),
    ("incident_id", "事件编号"),
    ("at", "时间"),
    ("reason", "原因"),
    ("reason_zh", "原因(中文)"),
    ("actor", "操作人"),
    ("from_state", "原环节"),
    ("from_tier", "原层级"),
    ("from_unit", "原单位"),
    ("to_state", "新环节"),
    ("to_tier", "新层级"),
    ("to_unit", "新单位"),
    ("late_minutes", "超时(分钟)"),
    ("note", "备注"),
    ("hash", "哈希"),
)


def select_escalations(
    db: Database,
    actor: Actor,
    *,
    jurisdiction: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    reason: str | None = None,
    tier: str | None = None,
    department: str | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    visible = _scope(select(m.Incident.id), actor)  # the same rule as every other list (access.can_see)
    stmt = select(m.EscalationEntry).where(m.EscalationEntry.incident_id.in_(visible))
    if jurisdiction:
        stmt = stmt.where(
            or_(
                m.EscalationEntry.to_unit.startswith(jurisdiction),
                m.EscalationEntry.from_unit.startswith(jurisdiction),
            )
        )
    if since:
        stmt = stmt.where(m.EscalationEntry.at >= since)
    if until:
        stmt = stmt.where(m.EscalationEntry.at < until)
    if reason:
        stmt = stmt.where(m.EscalationEntry.reason == reason)
    if tier:
        stmt = stmt.where(m.EscalationEntry.to_tier == tier)
    if department:
        dispatched = select(m.IncidentDepartment.incident_id).where(
            m.IncidentDepartment.department == department
        )
        stmt = stmt.where(m.EscalationEntry.incident_id.in_(dispatched))
    if after_id:
        stmt = stmt.where(m.EscalationEntry.id > after_id)
    stmt = stmt.order_by(m.EscalationEntry.id).limit(limit)
    with db.read() as s:
        rows = [escalation_dict(e) for e in s.execute(stmt).scalars()]
    return {"items": rows, "next_cursor": rows[-1]["id"] if len(rows) == limit else None}


def csv_row(e: dict[str, Any]) -> list[str]:
    at = datetime.fromisoformat(e["at"]).astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M:%S")
    late = e.get("late_seconds")
    values = {
        **e,
        "at": at,
        "reason_zh": REASON_ZH.get(e["reason"], e["reason"]),
        "from_state": e["from"]["state"],
        "from_tier": e["from"]["tier"],
        "from_unit": e["from"]["unit"],
        "to_state": e["to"]["state"],
        "to_tier": e["to"]["tier"],
        "to_unit": e["to"]["unit"],
        "late_minutes": f"{late / 60:.1f}" if late is not None else "",
    }
    return ["" if values.get(key) is None else str(values[key]) for key, _ in CSV_COLUMNS]


def escalations_csv(db: Database, actor: Actor, batch: int = 1000, **filters: Any) -> Iterator[str]:
    """CSV text in chunks: a BOM (so spreadsheet programs read the Chinese as UTF-8), a header, then rows.
    Times are local (Asia/Shanghai), as supervisors read them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([f"{zh} {key}" for key, zh in CSV_COLUMNS])
    yield "\ufeff" + _take(out)
    after: int | None = None
    while True:
        page = select_escalations(db, actor, after_id=after, limit=batch, **filters)
        for e in page["items"]:
            writer.writerow(csv_row(e))
        yield _take(out)
        if page["next_cursor"] is None:
            return
        after = page["next_cursor"]


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
