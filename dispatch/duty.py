"""Duty rosters (值班表, 365 天服务不打烊): who answers for a community, township or county centre at a moment. Pure.

A roster rotates its members through shifts of fixed length from an anchor; an optional daily window limits
when the unit is staffed at all (e.g. a village office 08:00–20:00). Overrides name someone else (or nobody)
for a period and win over the rotation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Override:
    start: datetime
    end: datetime
    member: str | None  # None: nobody on duty in this period


@dataclass(frozen=True)
class Roster:
    unit: str
    members: tuple[str, ...]
    anchor: datetime
    shift: timedelta = timedelta(hours=24)
    window: tuple[time, time] | None = None  # daily staffed hours, local time; None = around the clock
    overrides: tuple[Override, ...] = field(default=())
    tz: str = "Asia/Shanghai"

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError(f"roster of {self.unit} has no members")
        if self.shift <= timedelta(0):
            raise ValueError("a shift must be positive")

    def _staffed(self, at: datetime) -> bool:
        if self.window is None:
            return True
        local = at.astimezone(ZoneInfo(self.tz)).time()
        start, end = self.window
        return start <= local < end if start < end else (local >= start or local < end)

    def on_duty(self, at: datetime) -> str | None:
        for o in self.overrides:
            if o.start <= at < o.end:
                return o.member
        if not self._staffed(at):
            return None
        turns = int((at - self.anchor) // self.shift)
        return self.members[turns % len(self.members)]

    def next_on_duty(self, at: datetime, horizon: timedelta = timedelta(days=14)) -> datetime | None:
        """The first moment at or after `at` when someone is on duty (checked minute by minute at the edges)."""
        if self.on_duty(at) is not None:
            return at
        candidates = sorted(
            {o.end for o in self.overrides if o.end > at}
            | {
                self._next_window_start(at + timedelta(days=d))
                for d in range(int(horizon / timedelta(days=1)) + 1)
            }
        )
        for moment in candidates:
            if moment >= at and self.on_duty(moment) is not None:
                return moment
        return None

    def _next_window_start(self, around: datetime) -> datetime:
        if self.window is None:
            return around
        zone = ZoneInfo(self.tz)
        local = around.astimezone(zone)
        return datetime.combine(local.date(), self.window[0], zone)


@dataclass(frozen=True)
class DutyBook:
    """Rosters by unit code."""

    rosters: Mapping[str, Roster] = field(default_factory=dict)

    def roster(self, unit: str) -> Roster | None:
        return self.rosters.get(unit)


NO_DUTY = DutyBook()
