"""Time, injected. The engine never reads the wall clock; the service asks a Clock.

`SpeedClock` runs time limits faster for demos and tests (`GRIDDISPATCH_CLOCK_SPEED=60`: a minute of limits
passes in a real second). Its anchor is persisted by the caller, so the accelerated timeline continues across
restarts instead of jumping back to the wall clock.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    speed: float

    def now(self) -> datetime: ...

    def seconds_until(self, when: datetime) -> float:
        """Real seconds to wait until the clock shows `when` (0 if it already has)."""
        ...


def utc(dt: datetime) -> datetime:
    """Databases may hand back naive datetimes; everything inside is aware UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


class SystemClock:
    speed = 1.0

    def now(self) -> datetime:
        return datetime.now(UTC)

    def seconds_until(self, when: datetime) -> float:
        return max(0.0, (when - self.now()).total_seconds())


class SpeedClock:
    """virtual = anchor + (real - anchor) * speed."""

    def __init__(self, speed: float, anchor: datetime) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.speed = speed
        self.anchor = utc(anchor)

    def now(self) -> datetime:
        real = datetime.now(UTC)
        return self.anchor + (real - self.anchor) * self.speed

    def seconds_until(self, when: datetime) -> float:
        return max(0.0, (when - self.now()).total_seconds() / self.speed)


class FakeClock:
    """A clock tests move by hand."""

    speed = 1.0

    def __init__(self, start: datetime | None = None) -> None:
        self._now = utc(start or datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def seconds_until(self, when: datetime) -> float:
        return max(0.0, (when - self.now()).total_seconds())
