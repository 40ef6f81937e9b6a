"""Outbound webhooks: the event outbox, delivered to subscribers' URLs, signed, retried, logged, replayable.

Flow (every step a short transaction of its own, so dispatch is never held up):
1. fan-out: per subscription, read the outbox after its `cursor`, insert a delivery for each matching event and
   move the cursor, in ONE transaction under the subscription's row lock; commit order equals seq order
   (DispatchService._bump), so reading `seq > cursor` skips nothing, and the lock stops two processes from
   doubling a delivery (the unique (subscription, seq) constraint is the backstop).
2. claim: a conditional UPDATE moves a due delivery's lease (`claimed_until`) forward only if nobody holds it,
   so each attempt is made by one process; a process that dies mid-attempt loses its lease, another retries.
3. attempt: POST with httpx.AsyncClient and a timeout, in a background asyncio task; then record the attempt
   in the log and either mark the delivery delivered, schedule a retry with exponential backoff, or after
   `max_attempts` failures move it to the dead letter state. `replay` re-queues dead or past deliveries.

Delivery is at least once: a receiver should treat `seq` (or the delivery id) as the idempotency key and may
see events of different cases out of order. Body: the event envelope of SPEC §5 plus `webhook`
{subscription_id, delivery_id}. Headers: `X-GridDispatch-Event`, `X-GridDispatch-Delivery`,
`X-GridDispatch-Attempt`, `X-Request-Id`, `X-GridDispatch-Timestamp` and `X-GridDispatch-Signature`:
`v1=` hex HMAC-SHA256 of `"<timestamp>." + body` with the subscription's secret; the timestamp inside the
signed bytes lets receivers refuse stale replays of a captured request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import or_, select, update

from dispatch import models as m
from dispatch.clock import utc
from dispatch.db import Database
from dispatch.logs import bound
from dispatch.queries import latest_seq

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-GridDispatch-Signature"
TIMESTAMP_HEADER = "X-GridDispatch-Timestamp"


def wall_now() -> datetime:
    """Delivery scheduling is operational, not case time: it follows the wall clock, not the service clock."""
    return datetime.now(UTC)


# ---------------------------------------------------------------- signing


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: str, timestamp: int, body: bytes, signature: str, now: float | None = None, tolerance: float = 300
) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse stale timestamps."""
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


# ---------------------------------------------------------------- subscriptions


def host_allowed(url: str, allowed: str) -> bool:
    """`allowed`: comma-separated hosts, or `.example.gov.cn` for a domain and its subdomains; empty = any."""
    rules = [r.strip().lower() for r in allowed.split(",") if r.strip()]
    if not rules:
        return True
    host = (httpx.URL(url).host or "").lower()
    return any(host == r or (r.startswith(".") and (host.endswith(r) or host == r[1:])) for r in rules)


def matches(sub: m.WebhookSubscription, event_type: str, county: str, jurisdiction: list[str]) -> bool:
    if sub.event_types and not any(
        event_type == t or (t.endswith(".*") and event_type.startswith(t[:-1])) for t in sub.event_types
    ):
        return False
    code = sub.jurisdiction
    return code is None or code in jurisdiction or code == county


def add_subscription(
    db: Database,
    url: str,
    created_by: str,
    event_types: list[str] | None = None,
    jurisdiction: str | None = None,
    secret: str | None = None,
    since_seq: int | None = None,
) -> m.WebhookSubscription:
    """A new subscription receives events committed after now (or after `since_seq`, to backfill)."""
    start = latest_seq(db) if since_seq is None else since_seq
    sub = m.WebhookSubscription(
        url=url,
        secret=secret or secrets.token_urlsafe(32),
        event_types=list(event_types or []),
        jurisdiction=jurisdiction,
        cursor=start,
        created_at=wall_now(),
        created_by=created_by,
    )
    with db.write() as s:
        s.add(sub)
        s.flush()
    return sub


def subscriptions(db: Database, include_inactive: bool = False) -> list[m.WebhookSubscription]:
    with db.read() as s:
        stmt = select(m.WebhookSubscription).order_by(m.WebhookSubscription.id)
        if not include_inactive:
            stmt = stmt.where(m.WebhookSubscription.active)
        return list(s.execute(stmt).scalars())


def deactivate(db: Database, subscription_id: int) -> bool:
    with db.write() as s:
        done = s.execute(
            update(m.WebhookSubscription)
            .where(m.WebhookSubscription.id == subscription_id)
            .values(active=False)
        )
        return bool(done.rowcount)


# ---------------------------------------------------------------- fan-out, claim, record


def fan_out(db: Database, batch: int = 500) -> int:
    """Turn new outbox events into deliveries for every active subscription; returns how many were made."""
    made = 0
    newest = latest_seq(db)
    # Only behind subscriptions take a write transaction: on SQLite every write takes the file's lock.
    for sub_id in [s.id for s in subscriptions(db) if s.cursor < newest]:
        while True:
            with db.write() as s:
                sub = s.execute(
                    select(m.WebhookSubscription).where(m.WebhookSubscription.id == sub_id).with_for_update()
                ).scalar_one_or_none()
                if sub is None or not sub.active:
                    break
                events = list(
                    s.execute(
                        select(m.Event).where(m.Event.seq > sub.cursor).order_by(m.Event.seq).limit(batch)
                    ).scalars()
                )
                if not events:
                    break
                now = wall_now()
                for e in events:
                    if matches(sub, e.type, e.county, e.jurisdiction):
                        s.add(
                            m.WebhookDelivery(
                                subscription_id=sub_id,
                                event_seq=e.seq,
                                event_type=e.type,
                                incident_id=e.incident_id,
                                next_attempt_at=now,
                                created_at=now,
                            )
                        )
                        made += 1
                sub.cursor = events[-1].seq
            if len(events) < batch:
                break
    return made


@dataclass(frozen=True)
class Job:
    """One claimed attempt, with everything needed to make it off the database thread."""

    delivery_id: int
    attempt: int
    subscription_id: int
    url: str
    secret: str
    event_type: str
    incident_id: str | None
    body: bytes
    lease_until: datetime


def _due(now: datetime) -> Any:
    return (
        (m.WebhookDelivery.status == "pending")
        & (m.WebhookDelivery.next_attempt_at <= now)
        & or_(m.WebhookDelivery.claimed_until.is_(None), m.WebhookDelivery.claimed_until < now)
    )


def claim(db: Database, worker: str, lease_seconds: float, limit: int) -> list[Job]:
    """Lease up to `limit` due deliveries to this worker (conditional UPDATE; SKIP LOCKED on PostgreSQL)."""
    if limit <= 0:
        return []
    now = wall_now()
    until = now + timedelta(seconds=lease_seconds)
    jobs: list[Job] = []
    with db.read() as s:  # the common case, nothing due, costs no write transaction
        if s.execute(select(m.WebhookDelivery.id).where(_due(now)).limit(1)).first() is None:
            return []
    with db.write() as s:
        pick = (
            select(m.WebhookDelivery.id)
            .where(_due(now))
            .order_by(m.WebhookDelivery.next_attempt_at, m.WebhookDelivery.id)
            .limit(limit)
        )
        if db.is_postgresql:
            pick = pick.with_for_update(skip_locked=True)
        ids = list(s.execute(pick).scalars())
        if not ids:
            return []
        s.execute(
            update(m.WebhookDelivery)
            .where(m.WebhookDelivery.id.in_(ids), _due(now))
            .values(claimed_until=until, claimed_by=worker)
            .execution_options(synchronize_session=False)
        )
        rows = s.execute(
            select(m.WebhookDelivery, m.WebhookSubscription, m.Event)
            .join(m.WebhookSubscription, m.WebhookSubscription.id == m.WebhookDelivery.subscription_id)
            .join(m.Event, m.Event.seq == m.WebhookDelivery.event_seq)
            .where(
                m.WebhookDelivery.id.in_(ids),
                m.WebhookDelivery.claimed_by == worker,
                m.WebhookDelivery.status == "pending",
            )
        ).all()
        for d, sub, e in rows:
            envelope = {
                "seq": e.seq,
                "type": e.type,
                "at": utc(e.at).isoformat(),
                "incident_id": e.incident_id,
                "jurisdiction": e.jurisdiction,
                "data": e.data,
                "webhook": {"subscription_id": sub.id, "delivery_id": d.id},
            }
            jobs.append(
                Job(
                    d.id,
                    d.attempts + 1,
                    sub.id,
                    sub.url,
                    sub.secret,
                    e.type,
                    e.incident_id,
                    orjson.dumps(envelope),
                    until,
                )
            )
    return jobs


@dataclass(frozen=True)
class Result:
    status_code: int | None
    error: str | None
    duration_ms: float
    request_id: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next try after `attempts` failures: base, 2·base, 4·base … capped."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


def record(db: Database, job: Job, result: Result, max_attempts: int, base: float, cap: float) -> str:
    """Log the attempt and move the delivery on; returns its new status."""
    now = wall_now()
    with db.write() as s:
        s.add(
            m.WebhookAttempt(
                delivery_id=job.delivery_id,
                attempt=job.attempt,
                at=now,
                status_code=result.status_code,
                error=result.error,
                duration_ms=round(result.duration_ms, 1),
                request_id=result.request_id,
            )
        )
        d = s.get(m.WebhookDelivery, job.delivery_id)
        if d is None:
            return "gone"
        d.attempts = job.attempt
        d.claimed_until, d.claimed_by = None, None
        if result.ok:
            d.status, d.delivered_at, d.last_error = "delivered", now, None
        else:
            d.last_error = result.error or f"HTTP {result.status_code}"
            if job.attempt >= max_attempts:
                d.status = "dead"
            else:
                d.next_attempt_at = now + timedelta(seconds=backoff(job.attempt, base, cap))
        return d.status


def replay(
    db: Database,
    subscription_id: int,
    since_seq: int | None = None,
    until_seq: int | None = None,
    dead_only: bool = False,
) -> int:
    """Send again: dead letters only, or every matching event in (since_seq, until_seq]. Attempt counts
    restart; the log keeps the earlier attempts. Returns how many deliveries were queued."""
    now = wall_now()
    with db.write() as s:
        sub = s.get(m.WebhookSubscription, subscription_id)
        if sub is None:
            raise LookupError(f"no webhook subscription {subscription_id}")
        reset = (
            update(m.WebhookDelivery)
            .where(m.WebhookDelivery.subscription_id == subscription_id)
            .values(status="pending", attempts=0, next_attempt_at=now, claimed_until=None, claimed_by=None)
            .execution_options(synchronize_session=False)
        )
        if dead_only:
            return int(s.execute(reset.where(m.WebhookDelivery.status == "dead")).rowcount)
        lo, hi = since_seq or 0, min(until_seq if until_seq is not None else sub.cursor, sub.cursor)
        count = int(
            s.execute(
                reset.where(m.WebhookDelivery.event_seq > lo, m.WebhookDelivery.event_seq <= hi)
            ).rowcount
        )
        have = set(
            s.execute(
                select(m.WebhookDelivery.event_seq).where(
                    m.WebhookDelivery.subscription_id == subscription_id,
                    m.WebhookDelivery.event_seq > lo,
                    m.WebhookDelivery.event_seq <= hi,
                )
            ).scalars()
        )
        events = s.execute(
            select(m.Event).where(m.Event.seq > lo, m.Event.seq <= hi).order_by(m.Event.seq)
        ).scalars()
        for e in events:
            if e.seq not in have and matches(sub, e.type, e.county, e.jurisdiction):
                s.add(
                    m.WebhookDelivery(
                        subscription_id=subscription_id,
                        event_seq=e.seq,
                        event_type=e.type,
                        incident_id=e.incident_id,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
                count += 1
        return count


def delivery_log(
    db: Database, subscription_id: int | None = None, status: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Deliveries, the newest first, each with every attempt made."""
    with db.read() as s:
        stmt = select(m.WebhookDelivery).order_by(m.WebhookDelivery.id.desc()).limit(limit)
        if subscription_id is not None:
            stmt = stmt.where(m.WebhookDelivery.subscription_id == subscription_id)
        if status:
            stmt = stmt.where(m.WebhookDelivery.status == status)
        deliveries = list(s.execute(stmt).scalars())
        attempts = list(
            s.execute(
                select(m.WebhookAttempt)
                .where(m.WebhookAttempt.delivery_id.in_([d.id for d in deliveries]))
                .order_by(m.WebhookAttempt.id)
            ).scalars()
        )
    by_delivery: dict[int, list[dict[str, Any]]] = {}
    for a in attempts:
        by_delivery.setdefault(a.delivery_id, []).append(
            {
                "attempt": a.attempt,
                "at": _iso(a.at),
                "status_code": a.status_code,
                "error": a.error,
                "duration_ms": a.duration_ms,
                "request_id": a.request_id,
            }
        )
    return [
        {
            "id": d.id,
            "subscription_id": d.subscription_id,
            "event_seq": d.event_seq,
            "event_type": d.event_type,
            "incident_id": d.incident_id,
            "status": d.status,
            "attempts": d.attempts,
            "next_attempt_at": _iso(d.next_attempt_at) if d.status == "pending" else None,
            "last_error": d.last_error,
            "delivered_at": _iso(d.delivered_at),
            "log": by_delivery.get(d.id or 0, []),
        }
        for d in deliveries
    ]


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).isoformat()


# ---------------------------------------------------------------- the worker


@dataclass(frozen=True)
class WorkerSettings:
    """The `webhook_*` settings (dispatch/settings.py)."""

    max_attempts: int = 8
    backoff_seconds: float = 5.0
    backoff_max_seconds: float = 3600.0
    timeout_seconds: float = 10.0
    poll_seconds: float = 1.0
    concurrency: int = 16
    lease_seconds: float = 120.0
    allowed_hosts: str = ""

    @classmethod
    def from_settings(cls, settings: Any) -> WorkerSettings:
        return cls(
            max_attempts=settings.webhook_max_attempts,
            backoff_seconds=settings.webhook_backoff_seconds,
            backoff_max_seconds=settings.webhook_backoff_max_seconds,
            timeout_seconds=settings.webhook_timeout_seconds,
            poll_seconds=settings.webhook_poll_seconds,
            concurrency=settings.webhook_concurrency,
            lease_seconds=settings.webhook_lease_seconds,
            allowed_hosts=settings.webhook_allowed_hosts,
        )


class WebhookWorker:
    """A background asyncio task: fan out, claim what fits in the free slots, attempt each in its own task.
    A slow receiver only occupies its own slot for at most the timeout; dispatch never waits for any of it."""

    def __init__(self, db: Database, settings: WorkerSettings | None = None) -> None:
        self.db = db
        self.settings = settings or WorkerSettings()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self.attempts = 0  # made by this process (tests, metrics)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._http = httpx.AsyncClient(
            timeout=self.settings.timeout_seconds, follow_redirects=False, trust_env=False
        )
        self._task = asyncio.create_task(self._run(), name="webhook-worker")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._inflight) if t]
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a delivery stuck in a slow receiver must not hold up shutdown
            await asyncio.wait(tasks, timeout=3.0)
        if self._http is not None:
            await self._http.aclose()

    def poke(self, *_: Any) -> None:
        """After a commit, from any thread: there may be new events to fan out."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook worker step failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_seconds)
            self._wake.clear()

    async def step(self) -> None:
        await asyncio.to_thread(fan_out, self.db)
        free = self.settings.concurrency - len(self._inflight)
        jobs = await asyncio.to_thread(claim, self.db, self.worker_id, self.settings.lease_seconds, free)
        for job in jobs:
            task = asyncio.create_task(self._attempt(job), name=f"webhook-{job.delivery_id}")
            self._inflight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a slot is free

    async def _attempt(self, job: Job) -> None:
        assert self._http is not None
        with bound(f"wh-{job.delivery_id}-{job.attempt}", job.incident_id) as request_id:
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "griddispatch-webhooks/1",
                "X-GridDispatch-Event": job.event_type,
                "X-GridDispatch-Delivery": str(job.delivery_id),
                "X-GridDispatch-Attempt": str(job.attempt),
                "X-Request-Id": request_id,
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(job.secret, timestamp, job.body),
            }
            started = time.perf_counter()
            try:
                if not host_allowed(job.url, self.settings.allowed_hosts):  # the allow-list changed since
                    result = Result(None, "host not in the webhook allow-list", 0.0, request_id)
                else:
                    response = await self._http.post(job.url, content=job.body, headers=headers)
                    result = Result(response.status_code, None, _ms(started), request_id)
            except httpx.HTTPError as e:
                result = Result(None, f"{type(e).__name__}: {e}"[:500], _ms(started), request_id)
            self.attempts += 1
            s = self.settings
            status = await asyncio.to_thread(
                record, self.db, job, result, s.max_attempts, s.backoff_seconds, s.backoff_max_seconds
            )
            log.info(
                "webhook attempt %s of delivery %s: %s",
                job.attempt,
                job.delivery_id,
                status,
                extra={
                    "subscription_id": job.subscription_id,
                    "event_type": job.event_type,
                    "status_code": result.status_code,
                    "duration_ms": round(result.duration_ms, 1),
                },
            )
            if status == "dead":
                log.warning("webhook delivery %s is dead after %s attempts", job.delivery_id, job.attempt)
            elif status == "pending":
                self._wake.set()


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
