"""Duty rosters (值班表) and working calendars (工作日历) over HTTP."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from api.deps import ContainerDep, CurrentActor
from dispatch import models as m
from dispatch.access import sees_jurisdiction
from dispatch.clock import utc
from dispatch.domain import Actor, Refusal

router = APIRouter(prefix="/api/v1", tags=["duty"])
CODE = r"^\d{6}(\d{3}){0,2}$"  # county, township or community: units that keep a roster


class RosterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    members: list[str] = Field(min_length=1, max_length=50)
    shift_hours: float = Field(gt=0, le=24 * 14)
    anchor: datetime
    window: tuple[time, time] | None = None

    @field_validator("anchor")
    @classmethod
    def aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("anchor needs a UTC offset, e.g. 2026-01-01T08:00:00+08:00")
        return v


class OverrideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: datetime
    end: datetime
    member: str | None = None  # null: nobody on duty in this period

    @field_validator("start", "end")
    @classmethod
    def aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("times need a UTC offset")
        return v


class CalendarIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    periods: list[tuple[time, time]] = Field(min_length=1, max_length=6)
    extra_closed: list[date] = Field(default_factory=list, max_length=400)
    extra_open: list[date] = Field(default_factory=list, max_length=400)


def _may_manage(actor: Actor, unit: str) -> bool:
    """Admins and the county command centre manage every roster of their county; a township or community
    manages its own."""
    if actor.role in ("admin", "county_dispatcher"):
        return sees_jurisdiction(actor, unit)
    if actor.role in ("township_staff", "community_staff"):
        return actor.unit_code is not None and unit.startswith(actor.unit_code)
    return False


def _roster_view(r: m.DutyRoster | None, overrides: list[m.DutyOverride]) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "members": r.members,
        "shift_hours": r.shift_hours,
        "anchor": utc(r.anchor).isoformat(),
        "window": [r.window_start, r.window_end] if r.window_start else None,
        "overrides": [
            {"id": o.id, "start": utc(o.start).isoformat(), "end": utc(o.end).isoformat(), "member": o.member}
            for o in overrides
        ],
    }


@router.get("/duty/{unit}")
async def who_is_on_duty(
    unit: Annotated[str, Path(pattern=CODE)],
    container: ContainerDep,
    actor: CurrentActor,
    at: datetime | None = None,
) -> dict[str, Any]:
    if not sees_jurisdiction(actor, unit):
        raise Refusal(404, "not_found", f"no roster for {unit}")
    when = utc(at) if at else container.clock.now()
    await run_in_threadpool(container.service.calendars.refresh)
    book = container.service.calendars.duty()
    roster = book.roster(unit)

    def load() -> dict[str, Any] | None:
        with container.db.read() as s:
            row = s.get(m.DutyRoster, unit)
            overrides = list(
                s.query(m.DutyOverride)
                .filter(m.DutyOverride.unit_code == unit)
                .order_by(m.DutyOverride.start)
            )
            return _roster_view(row, overrides)

    return {
        "unit": unit,
        "at": when.isoformat(),
        "on_duty": roster.on_duty(when) if roster else None,
        "roster": await run_in_threadpool(load),
    }


@router.put("/duty/{unit}")
async def set_roster(
    unit: Annotated[str, Path(pattern=CODE)], body: RosterIn, container: ContainerDep, actor: CurrentActor
) -> dict[str, Any]:
    if not _may_manage(actor, unit):
        raise Refusal(403, "forbidden", f"you may not manage the roster of {unit}")
    if unit not in container.tree.units or container.tree.units[unit].level == "grid":
        raise Refusal(
            422, "bad_unit", f"{unit} is not a county, township or community of the active grid set"
        )

    def save() -> None:
        with container.db.write() as s:
            row = s.get(m.DutyRoster, unit) or m.DutyRoster(
                unit_code=unit, members=[], anchor=utc(body.anchor)
            )
            row.members = list(body.members)
            row.shift_hours = body.shift_hours
            row.anchor = utc(body.anchor)  # SQLite keeps no offset: store UTC
            row.window_start = body.window[0].isoformat(timespec="minutes") if body.window else None
            row.window_end = body.window[1].isoformat(timespec="minutes") if body.window else None
            s.add(row)

    await run_in_threadpool(save)
    container.service.calendars.invalidate()
    return await who_is_on_duty(unit, container, actor)


@router.post("/duty/{unit}/overrides", status_code=201)
async def add_override(
    unit: Annotated[str, Path(pattern=CODE)], body: OverrideIn, container: ContainerDep, actor: CurrentActor
) -> dict[str, Any]:
    if not _may_manage(actor, unit):
        raise Refusal(403, "forbidden", f"you may not manage the roster of {unit}")
    if body.end <= body.start:
        raise Refusal(422, "bad_period", "an override must end after it starts")

    def save() -> None:
        with container.db.write() as s:
            if s.get(m.DutyRoster, unit) is None:
                raise Refusal(404, "not_found", f"no roster for {unit}; set one first")
            s.add(
                m.DutyOverride(unit_code=unit, start=utc(body.start), end=utc(body.end), member=body.member)
            )

    await run_in_threadpool(save)
    container.service.calendars.invalidate()
    return await who_is_on_duty(unit, container, actor, at=body.start)


@router.put("/calendars/{county}", tags=["calendar"])
async def set_calendar(
    county: Annotated[str, Path(pattern=r"^\d{6}$")],
    body: CalendarIn,
    container: ContainerDep,
    actor: CurrentActor,
) -> dict[str, Any]:
    if actor.role != "admin" or not sees_jurisdiction(actor, county) or len(county) != 6:
        raise Refusal(403, "forbidden", "only an admin of the county sets its working calendar")
    last = time(0, 0)
    for start, end in body.periods:
        if not last <= start < end:
            raise Refusal(422, "bad_periods", "working periods must be ordered, non-empty and not overlap")
        last = end

    def save() -> None:
        with container.db.write() as s:
            row = s.get(m.CountyCalendar, county) or m.CountyCalendar(
                county=county, periods=[], extra_closed=[], extra_open=[]
            )
            row.periods = [
                [a.isoformat(timespec="minutes"), b.isoformat(timespec="minutes")] for a, b in body.periods
            ]
            row.extra_closed = [d.isoformat() for d in body.extra_closed]
            row.extra_open = [d.isoformat() for d in body.extra_open]
            s.add(row)

    await run_in_threadpool(save)
    container.service.calendars.invalidate()
    cal = container.service.calendars.calendar(county)
    return {
        "county": county,
        "minutes_per_day": cal.minutes_per_day,
        "periods": [[a.isoformat(), b.isoformat()] for a, b in cal.periods],
    }
