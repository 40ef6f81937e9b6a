"""Value objects of the dispatch domain. Pure: no database, no web framework, no clock reads."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

Severity = Literal["normal", "urgent", "major", "critical"]
SEVERITIES: tuple[str, ...] = ("normal", "urgent", "major", "critical")
SOURCES: tuple[str, ...] = ("grid_worker", "resident", "hotline", "open311", "sensor")
LEVELS: tuple[str, ...] = ("county", "township", "community", "grid")
# Codes nest by prefix (SPEC §2): county 6 digits, township 9, community 12, grid 15.
CODE_LENGTH = {"county": 6, "township": 9, "community": 12, "grid": 15}


def unit_at_tier(grid_code: str | None, county: str, tier: str) -> str:
    """The unit responsible at `tier` for a case located in `grid_code` (the county when unrouted)."""
    if grid_code is None:
        return county
    return grid_code[: CODE_LENGTH[tier]]


def jurisdiction_path(grid_code: str | None, county: str) -> tuple[str, ...]:
    """Codes from county down to grid: what screens filter on."""
    if grid_code is None:
        return (county,)
    return tuple(grid_code[: CODE_LENGTH[level]] for level in LEVELS)


@dataclass(frozen=True)
class Actor:
    username: str
    role: str
    unit_code: str | None = None  # where a unit-bound user sits in the jurisdiction tree
    department: str | None = None  # department staff only

    @property
    def is_system(self) -> bool:
        return self.role == "system"


SYSTEM = Actor(username="system", role="system")


@dataclass(frozen=True)
class DeptAssignment:
    department: str
    role: Literal["lead", "co"]
    status: Literal["dispatched", "accepted", "completed", "returned"] = "dispatched"


@dataclass(frozen=True)
class Deadline:
    """A clock running on a case: `ack` and `resolve` per stage, `dept_ack:<code>` / `dept_resolve:<code>` per
    department. `limit_minutes` counts the way `unit` counts (natural or working minutes) and includes granted
    extensions; `warn_at` is when the light turns yellow."""

    clock: str
    started_at: datetime
    due_at: datetime
    unit: str = "minutes"
    limit_minutes: float = 0.0
    warn_at: datetime | None = None


@dataclass(frozen=True)
class Suspension:
    """What a suspended (挂账) case resumes with: its stage and its clocks, frozen at `since`."""

    since: datetime
    state: str
    tier: str
    accepted: bool
    stage_entered_at: datetime
    deadlines: tuple[Deadline, ...]
    overdue: frozenset[str]
    next_supervise_at: datetime | None


@dataclass(frozen=True)
class Incident:
    id: str
    county: str
    workflow: str
    workflow_version: int
    source: str
    category: str
    severity: str
    state: str
    tier: str
    grid_code: str | None
    grid_generation: int | None
    lon: float
    lat: float
    created_at: datetime
    stage_entered_at: datetime
    reporter_user: str | None = None
    accepted: bool = False
    handled_state: str | None = None
    handled_tier: str | None = None
    departments: tuple[DeptAssignment, ...] = ()
    deadlines: tuple[Deadline, ...] = ()
    overdue: frozenset[str] = frozenset()  # clocks of this stage already fired: red ones, and `warn:<clock>`
    next_supervise_at: datetime | None = None
    pending_request: dict[str, Any] | None = None  # {"kind": "extension" | "suspend", "by", "value", "unit"}
    suspension: Suspension | None = None
    rework_count: int = 0
    rating: int | None = None
    closed_at: datetime | None = None
    merged_into: str | None = None
    version: int = 1
    near_boundary: bool = False  # reported just outside every grid and routed to the nearest one

    @property
    def jurisdiction(self) -> tuple[str, ...]:
        return jurisdiction_path(self.grid_code, self.county)

    def unit_at(self, tier: str) -> str:
        return unit_at_tier(self.grid_code, self.county, tier)

    def evolve(self, **changes: Any) -> Incident:
        return replace(self, **changes)


@dataclass(frozen=True)
class NewReport:
    """A validated report, already located (grid_code None = outside every grid)."""

    lon: float
    lat: float
    category: str
    severity: str
    description: str
    source: str
    address: str | None = None
    reporter_name: str | None = None
    reporter_phone: str | None = None
    photos: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    """An action somebody (or the system) wants to take on a case. Validated for shape, not for legality."""

    action: str
    note: str | None = None
    target: str | None = None
    lead: str | None = None
    co: tuple[str, ...] = ()
    rating: int | None = None
    generation: int | None = None  # grid generation of `target` for assign_grid (set by the service)
    extension: tuple[int, str] | None = None  # (value, unit) asked for with request_extension


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str
    tier: str
    note: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogEntry:
    """One row of the escalation log (升级日志): a tier change or a supervision act."""

    at: datetime
    actor: str
    reason: str
    from_state: str | None
    from_tier: str | None
    from_unit: str | None
    to_state: str
    to_tier: str
    to_unit: str
    late_seconds: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class EventOut:
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """Everything a decision produced; the service persists it in one transaction."""

    incident: Incident
    timeline: tuple[TimelineEntry, ...] = ()
    log: tuple[LogEntry, ...] = ()
    events: tuple[EventOut, ...] = ()


class Refusal(Exception):
    """An action that cannot be taken. `status` is the HTTP status the API answers with."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
