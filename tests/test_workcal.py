"""The working calendar: 2026 National Day and its 调休 days, lunch breaks, weekends, pauses; properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.workcal import DEFAULT_CALENDAR, WorkingCalendar, calendar_from_data

BJ = ZoneInfo("Asia/Shanghai")
cal = DEFAULT_CALENDAR


def bj(*args: int) -> datetime:
    return datetime(*args, tzinfo=BJ)


def test_national_day_2026_and_its_adjusted_working_days() -> None:
    assert cal.is_workday(date(2026, 9, 20))  # Sunday, worked (调休) for National Day
    assert not any(cal.is_workday(date(2026, 10, d)) for d in range(1, 8))  # 1–7 October off
    assert cal.is_workday(date(2026, 10, 8))
    assert cal.is_workday(date(2026, 10, 10))  # Saturday, worked (调休)
    assert not cal.is_workday(date(2026, 10, 11))


def test_a_limit_across_the_national_day_holiday() -> None:
    # Wednesday 30 September 16:00 + 2 working hours: 90 minutes that day, the rest on Thursday 8 October.
    assert cal.add_work_minutes(bj(2026, 9, 30, 16, 0), 120) == bj(2026, 10, 8, 9, 0)
    # One working day from Friday 9 October 17:00 ends on the 调休 Saturday, 10 October.
    assert cal.shift(bj(2026, 10, 9, 17, 0), cal.limit_minutes(1, "work_days"), "work_days") == bj(
        2026, 10, 10, 17, 0
    )


def test_the_lunch_break_does_not_count() -> None:
    assert cal.add_work_minutes(bj(2026, 11, 30, 11, 0), 90) == bj(2026, 11, 30, 15, 0)
    assert cal.work_minutes_between(bj(2026, 11, 30, 11, 30), bj(2026, 11, 30, 14, 45)) == 45
    # A report at lunch starts counting when the afternoon starts.
    assert cal.add_work_minutes(bj(2026, 11, 30, 12, 30), 10) == bj(2026, 11, 30, 14, 40)


def test_a_limit_that_spans_a_weekend() -> None:
    friday = bj(2026, 11, 27, 17, 0)
    assert cal.add_work_minutes(friday, 60) == bj(2026, 11, 30, 9, 0)  # Monday
    assert cal.work_minutes_between(friday, bj(2026, 11, 30, 9, 0)) == 60
    # Natural hours ignore the calendar.
    assert cal.shift(friday, 60, "hours") == bj(2026, 11, 27, 18, 0)


def test_a_suspension_pause_moves_the_deadline_by_the_working_time_paused() -> None:
    start = bj(2026, 11, 30, 9, 0)
    due = cal.add_work_minutes(start, 3 * 390)  # three working days
    paused_from, paused_to = bj(2026, 11, 30, 11, 0), bj(2026, 12, 1, 10, 0)
    pause = cal.work_minutes_between(paused_from, paused_to)
    assert pause == 60 + 180 + 90
    moved = cal.shift(due, pause, "work_days")
    assert cal.work_minutes_between(due, moved) == pause


def test_county_overrides_and_working_hours() -> None:
    county = calendar_from_data(
        [("09:00", "12:00"), ("13:30", "18:00")], extra_closed=["2026-12-01"], extra_open=["2026-12-05"]
    )
    assert county.minutes_per_day == 450
    assert not county.is_workday(date(2026, 12, 1))
    assert county.is_workday(date(2026, 12, 5))  # a Saturday the county opens
    assert county.add_work_minutes(bj(2026, 11, 30, 17, 30), 60) == bj(2026, 12, 2, 9, 30)


def test_years_without_holiday_data_fall_back_to_weekdays() -> None:
    assert cal.is_workday(date(2031, 1, 6))  # Monday
    assert not cal.is_workday(date(2031, 1, 4))  # Saturday


def test_bad_working_periods_are_refused() -> None:
    with pytest.raises(ValueError):
        WorkingCalendar(periods=((time(14, 0), time(12, 0)),))


moments = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)
amounts = st.floats(min_value=0, max_value=20 * 390, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(start=moments, minutes=amounts, more=amounts)
def test_deadlines_never_move_backwards(start: datetime, minutes: float, more: float) -> None:
    a = cal.add_work_minutes(start, minutes)
    b = cal.add_work_minutes(start, minutes + more)
    assert start <= a <= b


@settings(max_examples=200, deadline=None)
@given(start=moments, minutes=st.floats(min_value=1, max_value=10 * 390))
def test_adding_then_measuring_gives_back_the_amount(start: datetime, minutes: float) -> None:
    end = cal.add_work_minutes(start, minutes)
    assert cal.work_minutes_between(start, end) == pytest.approx(minutes, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    start=moments,
    limit=st.floats(min_value=1, max_value=10 * 390),
    pause_from=st.floats(0, 5),
    pause_days=st.floats(0, 10),
)
def test_a_pause_of_d_working_minutes_moves_the_deadline_by_exactly_d(
    start: datetime, limit: float, pause_from: float, pause_days: float
) -> None:
    due = cal.add_work_minutes(start, limit)
    since = start + timedelta(days=pause_from)
    until = since + timedelta(days=pause_days)
    d = cal.work_minutes_between(since, until)
    moved = cal.shift(due, d, "work_hours")
    assert moved >= due
    assert cal.work_minutes_between(due, moved) == pytest.approx(d, abs=1e-6)
