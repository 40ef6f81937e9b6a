"""Tables. The incident row is the current state; timeline, escalation log and events are append-only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, LargeBinary, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def _ts(**kw: Any) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), **kw))


def _json(**kw: Any) -> Any:
    return Field(sa_column=Column(JSON, **kw))


class Meta(SQLModel, table=True):
    key: str = Field(primary_key=True)
    value: str


class Counter(SQLModel, table=True):
    """Named counters; bumping one takes its row lock, which orders concurrent writers (event seq)."""

    name: str = Field(primary_key=True)
    value: int = Field(default=0, sa_type=BigInteger)


class GridGeneration(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    county: str = Field(index=True)
    created_at: datetime = _ts(nullable=False)
    active: bool = False
    note: str = ""


class Unit(SQLModel, table=True):
    """A node of the jurisdiction tree in one grid generation; grids are the leaves."""

    generation: int = Field(primary_key=True)
    code: str = Field(primary_key=True)
    name: str
    level: str = Field(index=True)
    parent: str | None = Field(default=None, index=True)
    geometry: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # WKB, WGS-84


class Department(SQLModel, table=True):
    code: str = Field(primary_key=True)
    name: str
    county: str


class Category(SQLModel, table=True):
    code: str = Field(primary_key=True)
    name: str
    lead_department: str | None = None


class User(SQLModel, table=True):
    username: str = Field(primary_key=True)
    display_name: str
    password_hash: str
    role: str
    unit_code: str | None = None
    department: str | None = None
    active: bool = True


class Incident(SQLModel, table=True):
    # Duplicate candidates are looked up per report: same category, newest first (dispatch/duplicates.py).
    __table_args__ = (
        Index("ix_incident_category_created", "category", "created_at"),
        # Supervisor KPIs (dispatch/stats.py): a period's reports and closures, and the open cases.
        Index("ix_incident_county_created", "county", "created_at"),
        Index("ix_incident_county_closed", "county", "closed_at"),
        Index(
            "ix_incident_county_open",
            "county",
            postgresql_where=text("state NOT IN ('closed', 'merged', 'rejected')"),
            sqlite_where=text("state NOT IN ('closed', 'merged', 'rejected')"),
        ),
    )
    id: str = Field(primary_key=True)
    county: str = Field(index=True)
    workflow: str
    workflow_version: int
    source: str
    category: str = Field(index=True)
    severity: str
    state: str = Field(index=True)
    tier: str
    grid_code: str | None = Field(default=None, index=True)
    grid_generation: int | None = None
    near_boundary: bool = False  # reported just outside every grid, routed to the nearest one
    lon: float
    lat: float
    address: str | None = None
    description: str = Field(sa_column=Column(Text, nullable=False))
    photos: list[str] = _json(nullable=False)
    reporter_name: str | None = None
    reporter_phone: str | None = None
    reporter_user: str | None = None
    accepted: bool = False
    handled_state: str | None = None
    handled_tier: str | None = None
    departments: list[dict[str, str]] = _json(nullable=False)
    deadlines: list[dict[str, str]] = _json(nullable=False)
    overdue: list[str] = _json(nullable=False)
    next_supervise_at: datetime | None = _ts(nullable=True)
    pending_request: dict[str, Any] | None = _json(nullable=True)  # 延期/挂账 request awaiting a decision
    suspension: dict[str, Any] | None = _json(nullable=True)  # what a suspended (挂账) case resumes with
    rework_count: int = 0
    rating: int | None = None
    closed_at: datetime | None = _ts(nullable=True)
    merged_into: str | None = None
    created_at: datetime = _ts(nullable=False)
    stage_entered_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False, index=True)
    version: int = 1


class IncidentDepartment(SQLModel, table=True):
    """Which departments a case is dispatched to, for department users' lists."""

    incident_id: str = Field(primary_key=True)
    department: str = Field(primary_key=True, index=True)


class TimelineEntry(SQLModel, table=True):
    __tablename__ = "timeline"
    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True)
    seq: int
    at: datetime = _ts(nullable=False)
    actor: str
    action: str
    from_state: str | None = None
    to_state: str
    tier: str
    note: str | None = None
    data: dict[str, Any] = _json(nullable=False)
    # Each case's timeline is hash-chained on its own: an entry holds the hash of the case's previous entry.
    prev_hash: str = Field(default="", sa_column_kwargs={"server_default": ""})
    hash: str = Field(default="", sa_column_kwargs={"server_default": ""})


class EscalationEntry(SQLModel, table=True):
    """The 升级日志. Append-only and hash-chained: each row holds the previous row's hash."""

    __tablename__ = "escalation_log"
    __table_args__ = (
        Index("ix_escalation_log_at", "at"),
        # The supervisor's log page (dispatch/queries.py escalations): a county in id order, and a county's
        # time range read from the index alone (it carries what the filters test).
        Index("ix_escalation_log_county_id", "county", "id"),
        Index(
            "ix_escalation_log_county_at",
            "county",
            "at",
            postgresql_include=["id", "reason", "to_tier", "from_unit", "to_unit"],
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True)
    seq: int
    at: datetime = _ts(nullable=False)
    county: str
    reason: str
    actor: str
    from_state: str | None = None
    from_tier: str | None = None
    from_unit: str | None = None
    to_state: str
    to_tier: str
    to_unit: str
    late_seconds: float | None = None
    note: str | None = None
    prev_hash: str
    hash: str


class Event(SQLModel, table=True):
    """The outbox: every change commits one or more events with a global, strictly increasing seq."""

    seq: int = Field(primary_key=True, sa_type=BigInteger)
    type: str
    at: datetime = _ts(nullable=False)
    incident_id: str | None = Field(default=None, index=True)
    county: str
    jurisdiction: list[str] = _json(nullable=False)
    data: dict[str, Any] = _json(nullable=False)


class DeadlineRow(SQLModel, table=True):
    """A running clock. The truth for timers: the scheduler only holds what is due soon, rebuilt from here."""

    __tablename__ = "deadline"
    __table_args__ = (Index("ix_deadline_status_due", "status", "due_at"),)
    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True)
    clock: str
    due_at: datetime = _ts(nullable=False)
    status: str = "pending"  # pending | fired | cancelled
    fired_at: datetime | None = _ts(nullable=True)


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "idempotency"
    username: str = Field(primary_key=True)
    key: str = Field(primary_key=True)
    incident_id: str
    response: dict[str, Any] = _json(nullable=False)
    created_at: datetime = _ts(nullable=False)


class CountyCalendar(SQLModel, table=True):
    """A county's working hours and its own closed/open days on top of the national holiday calendar."""

    __tablename__ = "county_calendar"
    county: str = Field(primary_key=True)
    periods: list[list[str]] = _json(nullable=False)  # [["08:30", "12:00"], ["14:30", "17:30"]]
    extra_closed: list[str] = _json(nullable=False)  # ISO dates
    extra_open: list[str] = _json(nullable=False)


class DutyRoster(SQLModel, table=True):
    """值班表: members rotate through shifts from an anchor; `window_*` limit the staffed hours of a day."""

    __tablename__ = "duty_roster"
    unit_code: str = Field(primary_key=True)
    members: list[str] = _json(nullable=False)
    shift_hours: float = 24.0
    anchor: datetime = _ts(nullable=False)
    window_start: str | None = None
    window_end: str | None = None


class DutyOverride(SQLModel, table=True):
    __tablename__ = "duty_override"
    id: int | None = Field(default=None, primary_key=True)
    unit_code: str = Field(index=True)
    start: datetime = _ts(nullable=False)
    end: datetime = _ts(nullable=False)
    member: str | None = None  # None: nobody on duty


# ---------------------------------------------------------------- interoperability (issue 8)


class Open311ApiKey(SQLModel, table=True):
    """A key a 311/hotline system passes as GeoReport `api_key` to POST requests, bound to one county.

    Deliberately minimal (named for Open311 only) so that general API keys can fold it in later. Only the
    SHA-256 of the key is stored; the key itself is shown once when it is made."""

    __tablename__ = "open311_api_key"
    key_hash: str = Field(primary_key=True)
    label: str = Field(
        unique=True
    )  # the client system's name; cases it files have reporter_user open311:<label>
    county: str
    created_at: datetime = _ts(nullable=False)
    active: bool = True


class WebhookSubscription(SQLModel, table=True):
    """An outbound webhook: events of the given types (empty = all, `incident.*` = a prefix) whose
    jurisdiction path holds `jurisdiction`. `cursor` is the last outbox seq turned into deliveries: it moves
    in the same transaction that inserts them, so no event is skipped or doubled across restarts."""

    __tablename__ = "webhook_subscription"
    id: int | None = Field(default=None, primary_key=True)
    url: str
    secret: str
    event_types: list[str] = _json(nullable=False)
    jurisdiction: str | None = None
    active: bool = True
    cursor: int = Field(default=0, sa_type=BigInteger)
    created_at: datetime = _ts(nullable=False)
    created_by: str


class WebhookDelivery(SQLModel, table=True):
    """One event for one subscription: pending → delivered, or dead (dead letter) after the last attempt.
    A worker claims it by moving `claimed_until` forward with a conditional UPDATE (a lease), so each
    attempt is made by one process; a worker that dies loses its lease and another one retries."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_seq", name="uq_webhook_delivery_event"),
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(index=True)
    event_seq: int = Field(sa_type=BigInteger)
    event_type: str
    incident_id: str | None = None
    status: str = "pending"  # pending | delivered | dead
    attempts: int = 0
    next_attempt_at: datetime = _ts(nullable=False)
    claimed_until: datetime | None = _ts(nullable=True)
    claimed_by: str | None = None
    last_error: str | None = None
    created_at: datetime = _ts(nullable=False)
    delivered_at: datetime | None = _ts(nullable=True)


class WebhookAttempt(SQLModel, table=True):
    """The delivery log: one row per HTTP attempt, kept when a delivery is replayed."""

    __tablename__ = "webhook_attempt"
    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(index=True)
    attempt: int
    at: datetime = _ts(nullable=False)
    status_code: int | None = None
    error: str | None = None
    duration_ms: float
    request_id: str
