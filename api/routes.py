"""HTTP API (SPEC §4). Thin: parse, authorize, call the service, shape the response."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.responses import Response, StreamingResponse

from api.deps import ContainerDep, CurrentActor
from api.errors import JSON
from api.photos import REPORT_BODY_DOC, read_report
from api.schemas import ActionIn
from dispatch import models as m
from dispatch.access import READ_ONLY_ROLES, sees_jurisdiction
from dispatch.auth import issue_screen_token, issue_token, verify_password
from dispatch.clock import utc
from dispatch.domain import Command, NewReport, Refusal
from dispatch.escalation_export import escalations_csv, select_escalations
from dispatch.queries import (
    IncidentFilter,
    escalations,
    incident_detail,
    list_incidents,
    verify_escalation_log,
    verify_timelines,
)
from grids.coords import to_wgs84
from workflows.machine import mermaid

router = APIRouter(prefix="/api/v1")
health = APIRouter()


@health.get("/healthz", tags=["ops"])
async def healthz(container: ContainerDep) -> dict[str, Any]:
    return {"status": "ok", "grids": len(container.tree.index), "generation": container.tree.generation}


@router.post("/auth/token", tags=["auth"])
async def token(
    container: ContainerDep, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> dict[str, str]:
    def check() -> m.User | None:
        with container.db.read() as s:
            user = s.get(m.User, form.username)
        if user is None or not user.active or not verify_password(user.password_hash, form.password):
            return None
        return user

    user = await run_in_threadpool(check)
    if user is None:
        raise HTTPException(401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"})
    minutes = container.settings.token_minutes
    return {
        "access_token": issue_token(
            user.username, container.jwt_secret, datetime.now().astimezone(), minutes
        ),
        "token_type": "bearer",
    }


class ScreenTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jurisdiction: str = Field(pattern=r"^\d{6}(\d{3}){0,3}$")
    days: int = Field(default=30, ge=1, le=90)


SCREEN_ISSUERS = frozenset({"admin", "county_dispatcher", "supervisor", "township_staff", "community_staff"})


@router.post("/auth/screen-token", tags=["auth"])
async def screen_token(body: ScreenTokenIn, container: ContainerDep, actor: CurrentActor) -> dict[str, Any]:
    """A read-only token for a wall screen, bound to one jurisdiction inside the issuer's own."""
    if actor.role not in SCREEN_ISSUERS or not sees_jurisdiction(actor, body.jurisdiction):
        raise Refusal(403, "forbidden", "you may issue screen tokens only for your own jurisdiction")
    if body.jurisdiction not in container.tree.units:
        raise Refusal(422, "unknown_unit", f"{body.jurisdiction} is not a unit of the active grid set")
    now = datetime.now().astimezone()
    token = issue_screen_token(actor.username, body.jurisdiction, container.jwt_secret, now, body.days)
    return {
        "access_token": token,
        "token_type": "bearer",
        "jurisdiction": body.jurisdiction,
        "days": body.days,
    }


@router.post("/reports", status_code=201, tags=["reports"], openapi_extra=REPORT_BODY_DOC)
async def submit_report(
    request: Request,
    container: ContainerDep,
    actor: CurrentActor,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSON:
    if actor.role in READ_ONLY_ROLES:
        raise Refusal(403, "read_only", "a screen token reads; it cannot submit reports")
    # JSON body or multipart with photo files (SPEC §4); both are validated by the same ReportIn model.
    body, uploaded = await read_report(request, container)
    if body.category not in container.categories:
        raise Refusal(
            422,
            "unknown_category",
            f"unknown category {body.category!r}; known: {', '.join(sorted(container.categories))}",
        )
    source = body.source or (
        "grid_worker"
        if actor.role == "grid_worker"
        else "hotline"
        if actor.role == "county_dispatcher"
        else "resident"
    )
    lon, lat = to_wgs84(body.lon, body.lat, body.coord_sys)
    report = NewReport(
        lon=lon,
        lat=lat,
        category=body.category,
        severity=body.severity,
        description=body.description,
        source=source,
        address=body.address,
        reporter_name=body.reporter.name if body.reporter else None,
        reporter_phone=body.reporter.phone if body.reporter else None,
        photos=(*body.photos, *uploaded),
    )
    view = await run_in_threadpool(container.service.submit_report, report, actor, idempotency_key)
    return JSON(view, status_code=201)


@router.get("/incidents", tags=["incidents"])
async def incidents(
    container: ContainerDep,
    actor: CurrentActor,
    state: str | None = None,
    tier: str | None = None,
    category: str | None = None,
    jurisdiction: Annotated[str | None, Query(pattern=r"^\d{6}(\d{3}){0,3}$")] = None,
    light: Annotated[str | None, Query(pattern="^(green|yellow|red)$")] = None,
    overdue: bool | None = None,
    bbox: Annotated[str | None, Query(description="west,south,east,north")] = None,
    updated_after: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSON:
    box = _parse_bbox(bbox) if bbox else None
    f = IncidentFilter(
        state,
        tier,
        category,
        jurisdiction,
        light,
        overdue,
        utc(updated_after) if updated_after else None,
        box,
        cursor,
        limit,
    )
    now = container.clock.now()
    page = await run_in_threadpool(list_incidents, container.db, actor, f, container.tree, now)
    return JSON(page)


def _parse_bbox(raw: str) -> tuple[float, float, float, float]:
    try:
        w, s, e, n = (float(x) for x in raw.split(","))
    except ValueError:
        raise Refusal(422, "bad_bbox", "bbox must be four numbers: west,south,east,north") from None
    if not (-180 <= w <= e <= 180 and -90 <= s <= n <= 90):
        raise Refusal(
            422, "bad_bbox", "bbox must satisfy west <= east and south <= north within WGS-84 ranges"
        )
    return (w, s, e, n)


@router.get("/incidents/{incident_id}", tags=["incidents"])
async def incident(incident_id: str, container: ContainerDep, actor: CurrentActor) -> JSON:
    view = await run_in_threadpool(
        incident_detail, container.db, actor, incident_id, container.tree, container.clock.now()
    )
    if view is None:
        raise Refusal(404, "not_found", f"no case {incident_id}")
    return JSON(view)


@router.post("/incidents/{incident_id}/actions", tags=["incidents"])
async def act(incident_id: str, body: ActionIn, container: ContainerDep, actor: CurrentActor) -> JSON:
    command = Command(
        action=body.action,
        note=body.note,
        target=body.target,
        lead=body.departments.lead if body.departments else None,
        co=tuple(body.departments.co) if body.departments else (),
        rating=body.rating,
        extension=(body.extension.value, body.extension.unit) if body.extension else None,
    )
    view = await run_in_threadpool(container.service.act, incident_id, command, actor, body.expected_version)
    return JSON(view)


@router.get(
    "/escalations",
    tags=["supervision"],
    responses={200: {"content": {"application/json": {}, "text/csv": {"schema": {"type": "string"}}}}},
)
async def escalation_log(
    container: ContainerDep,
    actor: CurrentActor,
    jurisdiction: Annotated[str | None, Query(pattern=r"^\d{6}(\d{3}){0,3}$")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    reason: str | None = None,
    tier: str | None = None,
    cursor: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    department: Annotated[str | None, Query(max_length=60)] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    if format == "csv" or department:
        # The supervisor console's filters and export (issue 5): the whole selection as CSV, or by department.
        filters = {
            "jurisdiction": jurisdiction,
            "since": utc(since) if since else None,
            "until": utc(until) if until else None,
            "reason": reason,
            "tier": tier,
            "department": department,
        }
        if format == "csv":
            return StreamingResponse(
                iterate_in_threadpool(escalations_csv(container.db, actor, **filters)),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="escalations.csv"'},
            )
        return JSON(
            await run_in_threadpool(
                lambda: select_escalations(container.db, actor, after_id=cursor, limit=limit, **filters)
            )
        )
    page = await run_in_threadpool(
        lambda: escalations(
            container.db,
            actor,
            jurisdiction=jurisdiction,
            since=utc(since) if since else None,
            until=utc(until) if until else None,
            reason=reason,
            tier=tier,
            after_id=cursor,
            limit=limit,
        )
    )
    return JSON(page)


@router.get("/escalations/verify", tags=["supervision"])
async def escalation_verify(container: ContainerDep, actor: CurrentActor) -> dict[str, Any]:
    if actor.role not in ("supervisor", "admin", "county_dispatcher"):
        raise Refusal(403, "forbidden", "only supervisors, dispatchers and admins may check the log chain")
    check = await run_in_threadpool(verify_escalation_log, container.db)
    timelines, broken_case = await run_in_threadpool(verify_timelines, container.db)
    return {
        "ok": check.ok and timelines.ok,
        "entries": check.entries,
        "first_broken_id": check.first_broken_id,
        "problem": check.problem,
        "timelines": {
            "ok": timelines.ok,
            "entries": timelines.entries,
            "first_broken_id": timelines.first_broken_id,
            "incident_id": broken_case,
            "problem": timelines.problem,
        },
    }


# GET /grids/locate lives in api/routes_grids.py with the other grid routes.


@router.get("/workflows", tags=["workflows"])
async def workflows(container: ContainerDep, _actor: CurrentActor) -> list[dict[str, Any]]:
    return [
        {"name": d.name, "version": d.version, "title": d.title}
        for d in container.service.definitions.values()
    ]


@router.get("/workflows/{name}", tags=["workflows"])
async def workflow(name: str, container: ContainerDep, _actor: CurrentActor) -> dict[str, Any]:
    d = container.service.current_definition(name)
    return {
        "name": d.name,
        "version": d.version,
        "title": d.title,
        "states": [{"name": s.name, "zh": s.zh, "tier": s.tier, "final": s.final} for s in d.states.values()],
        "transitions": [
            {
                "trigger": t.trigger,
                "source": t.source,
                "dest": t.dest,
                "roles": list(t.roles),
                "conditions": list(t.conditions),
                "needs": list(t.needs),
            }
            for t in d.transitions
        ],
        "side_actions": {k: list(v.roles) for k, v in d.side_actions.items()},
        "mermaid": mermaid(d),
    }
