"""The working calendar (工作日历): which minutes count against a limit in working time. Pure.

Working days come from chinese-calendar (public holidays and the adjusted 调休 working days); a county may add
days it closes or opens, and sets its own working hours (default 08:30–12:00 and 14:30–17:30, Asia/Shanghai).
A limit in `work_days` is that many full working days of working minutes, so deadlines and elapsed time are
measured with one rule (elapsed working minutes against a limit in working minutes).

Years the library has no data for fall back to Monday–Friday; counties can correct those with overrides.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import chinese_calendar

log = logging.getLogger(__name__)

NATURAL_MINUTES = {"minutes": 1, "hours": 60}
WORK_UNITS = ("work_hours", "work_days")
DEFAULT_PERIODS = ((time(8, 30), time(12, 0)), (time(14, 30), time(17, 30)))


@lru_cache(maxsize=4096)
def _library_workday(day: date) -> bool:
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        log.warning("chinese-calendar has no data for %s; counting Monday–Friday", day.year)
        return day.weekday() < 5


@dataclass(frozen=True)
class WorkingCalendar:
    tz: str = "Asia/Shanghai"
    periods: tuple[tuple[time, time], ...] = DEFAULT_PERIODS
    extra_closed: frozenset[date] = field(default_factory=frozenset)
    extra_open: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        last = time(0, 0)
        for start, end in self.periods:
            if not (last <= start < end):
                raise ValueError("working periods must be ordered and not overlap")
            last = end

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def minutes_per_day(self) -> float:
        return sum(_minutes(s, e) for s, e in self.periods)

    def is_workday(self, day: date) -> bool:
        if day in self.extra_closed:
            return False
        if day in self.extra_open:
            return True
        return _library_workday(day)

    def _windows(self, day: date) -> list[tuple[datetime, datetime]]:
        if not self.is_workday(day):
            return []
        zone = self.zone
        return [
            (datetime.combine(day, s, zone).astimezone(UTC), datetime.combine(day, e, zone).astimezone(UTC))
            for s, e in self.periods
        ]

    def _local_day(self, moment: datetime) -> date:
        return moment.astimezone(self.zone).date()

    def work_minutes_between(self, start: datetime, end: datetime) -> float:
        """Working minutes in [start, end); negative if end is before start."""
        if end < start:
            return -self.work_minutes_between(end, start)
        total = 0.0
        day = self._local_day(start)
        last = self._local_day(end)
        while day <= last:
            for ws, we in self._windows(day):
                lo, hi = max(ws, start), min(we, end)
                if hi > lo:
                    total += (hi - lo).total_seconds() / 60
            day += timedelta(days=1)
        return total

    def add_work_minutes(self, start: datetime, minutes: float) -> datetime:
        """The moment `minutes` working minutes after `start` (or before it, if negative)."""
        if minutes < 0:
            return self._subtract(start, -minutes)
        left = minutes
        day = self._local_day(start)
        for _ in range(3700):  # ten years of days: a limit cannot be longer
            for ws, we in self._windows(day):
                lo = max(ws, start)
                if we <= lo:
                    continue
                span = (we - lo).total_seconds() / 60
                if left <= span:
                    return lo + timedelta(minutes=left)
                left -= span
            day += timedelta(days=1)
        raise ValueError("no working time found within ten years; check the calendar")

    def _subtract(self, end: datetime, minutes: float) -> datetime:
        left = minutes
        day = self._local_day(end)
        for _ in range(3700):
            for ws, we in reversed(self._windows(day)):
                hi = min(we, end)
                if hi <= ws:
                    continue
                span = (hi - ws).total_seconds() / 60
                if left <= span:
                    return hi - timedelta(minutes=left)
                left -= span
            day -= timedelta(days=1)
        raise ValueError("no working time found within ten years; check the calendar")

    # ---- one rule for every unit

    def limit_minutes(self, value: float, unit: str) -> float:
        """A limit in the minutes its unit counts: natural minutes, or working minutes."""
        if unit in NATURAL_MINUTES:
            return value * NATURAL_MINUTES[unit]
        if unit == "work_hours":
            return value * 60
        if unit == "work_days":
            return value * self.minutes_per_day
        raise ValueError(f"unknown unit {unit!r}")

    def shift(self, start: datetime, minutes: float, unit: str) -> datetime:
        """`start` moved by `minutes` counted the way `unit` counts."""
        if unit in NATURAL_MINUTES:
            return start + timedelta(minutes=minutes)
        return self.add_work_minutes(start, minutes)

    def measure(self, start: datetime, end: datetime, unit: str) -> float:
        """Minutes from start to end counted the way `unit` counts."""
        if unit in NATURAL_MINUTES:
            return (end - start).total_seconds() / 60
        return self.work_minutes_between(start, end)


def _minutes(start: time, end: time) -> float:
    return (end.hour * 60 + end.minute) - (start.hour * 60 + start.minute)


def calendar_from_data(
    periods: Iterable[tuple[str, str]] | None = None,
    extra_closed: Iterable[str] = (),
    extra_open: Iterable[str] = (),
    tz: str = "Asia/Shanghai",
) -> WorkingCalendar:
    """A calendar from plain data (strings as stored in the database or a YAML file)."""
    parsed = (
        tuple((time.fromisoformat(s), time.fromisoformat(e)) for s, e in periods)
        if periods
        else DEFAULT_PERIODS
    )
    return WorkingCalendar(
        tz=tz,
        periods=parsed,
        extra_closed=frozenset(date.fromisoformat(d) for d in extra_closed),
        extra_open=frozenset(date.fromisoformat(d) for d in extra_open),
    )


DEFAULT_CALENDAR = WorkingCalendar()
