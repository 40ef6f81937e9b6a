"""Working calendars per county and duty rosters, read from the database and cached briefly."""

from __future__ import annotations

import threading
import time as _time
from datetime import time, timedelta

from sqlalchemy import select

from dispatch import models as m
from dispatch.clock import utc
from dispatch.db import Database
from dispatch.duty import DutyBook, Override, Roster
from dispatch.workcal import DEFAULT_CALENDAR, WorkingCalendar, calendar_from_data

CACHE_SECONDS = 30.0


class CalendarBook:
    """Calendars and rosters change rarely and are read on every decision: keep them for a few seconds."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._loaded_at = -1e9
        self._calendars: dict[str, WorkingCalendar] = {}
        self._duty = DutyBook()

    def invalidate(self) -> None:
        """Reload now (after a change made through the API)."""
        with self._lock:
            self._loaded_at = -1e9
        self._fresh()

    def _fresh(self) -> None:
        with self._lock:
            if _time.monotonic() - self._loaded_at < CACHE_SECONDS:
                return
            with self.db.read() as s:
                calendars = {
                    c.county: calendar_from_data([tuple(p) for p in c.periods], c.extra_closed, c.extra_open)
                    for c in s.execute(select(m.CountyCalendar)).scalars()
                }
                overrides: dict[str, list[Override]] = {}
                for o in s.execute(select(m.DutyOverride)).scalars():
                    overrides.setdefault(o.unit_code, []).append(Override(utc(o.start), utc(o.end), o.member))
                rosters = {
                    r.unit_code: Roster(
                        unit=r.unit_code,
                        members=tuple(r.members),
                        anchor=utc(r.anchor),
                        shift=timedelta(hours=r.shift_hours),
                        window=(time.fromisoformat(r.window_start), time.fromisoformat(r.window_end))
                        if r.window_start and r.window_end
                        else None,
                        overrides=tuple(overrides.get(r.unit_code, ())),
                    )
                    for r in s.execute(select(m.DutyRoster)).scalars()
                }
            self._calendars, self._duty = calendars, DutyBook(rosters)
            self._loaded_at = _time.monotonic()

    def refresh(self) -> None:
        """Reload if stale. Call it before opening a write transaction: a load takes a pooled connection, and
        taking a second one while holding the write lock can deadlock against writers queued for that lock."""
        self._fresh()

    def calendar(self, county: str) -> WorkingCalendar:
        return self._calendars.get(county, DEFAULT_CALENDAR)

    def duty(self) -> DutyBook:
        return self._duty
