"""KPIs for the supervisor console and the command-centre counters (SPEC §4 `GET /stats`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.deps import ContainerDep, CurrentActor
from api.errors import JSON
from dispatch.access import sees_jurisdiction
from dispatch.clock import utc
from dispatch.domain import Actor, Refusal
from dispatch.stats import Period, compute_stats, local_day, overdue_cases

router = APIRouter(prefix="/api/v1", tags=["supervision"])
Code = Annotated[str | None, Query(pattern=r"^\d{6}(\d{3}){0,3}$")]


def _check_scope(actor: Actor, jurisdiction: str | None) -> None:
    if jurisdiction and not sees_jurisdiction(actor, jurisdiction):
        raise Refusal(403, "forbidden", f"{jurisdiction} is outside your jurisdiction")


@router.get("/stats")
async def stats(
    container: ContainerDep,
    actor: CurrentActor,
    jurisdiction: Code = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> JSON:
    """KPIs of the cases you may see; the period defaults to today (local time, service clock)."""
    _check_scope(actor, jurisdiction)
    now = container.clock.now()
    today = local_day(now)
    period = Period(utc(since) if since else today.since, utc(until) if until else today.until)
    if period.until <= period.since:
        raise Refusal(422, "bad_period", "until must be after since")
    return JSON(await run_in_threadpool(compute_stats, container.db, actor, now, jurisdiction, period))


@router.get("/stats/overdue")
async def overdue(
    container: ContainerDep,
    actor: CurrentActor,
    jurisdiction: Code = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> JSON:
    """Open cases past a deadline, sorted by how late they are (the latest first)."""
    _check_scope(actor, jurisdiction)
    now = container.clock.now()
    items = await run_in_threadpool(
        overdue_cases, container.db, actor, now, container.tree, jurisdiction, limit
    )
    return JSON({"now": now.isoformat(), "items": items})
