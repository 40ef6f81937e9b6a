"""Timers: deadlines live in the database (the truth); APScheduler holds in memory only the ones due soon.

On start and then every `sweep_seconds` the runner loads pending deadlines due within the horizon (including
ones that passed while the server was down) and schedules them; new deadlines are scheduled right after the
commit that made them. A firing re-enters the service as a command; the service claims the deadline row in the
same transaction as its effect (a conditional UPDATE pending → fired under the case's row lock), so each
deadline takes effect at most once whatever the processes do, and a deadline whose case moved on was already
cancelled and does nothing.

Several processes (PostgreSQL): before scheduling a deadline a process claims it with a session-level advisory
lock (`pg_try_advisory_lock`, which, like SKIP LOCKED, skips what another process holds) on one dedicated
connection. So each due deadline is worked on by one process, the process that committed it keeps it, and the
sweeps of the others pick up the rest. The claim is released after firing; if the process dies, its connection
closes and PostgreSQL releases all its claims at once, and the next sweep of any other process takes them over.
Claims only share out the work: correctness never rests on them (see the conditional UPDATE above).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from dispatch.clock import Clock
from dispatch.db import Database
from dispatch.queries import pending_deadlines
from dispatch.service import Committed, DispatchService

log = logging.getLogger(__name__)
CLAIM_NAMESPACE = 0x6764  # first key of the two-int advisory locks that claim deadlines ("gd")


class DeadlineClaims:
    """Which due deadlines this process works on. A no-op on SQLite (one process owns the file's timers)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: Any = None
        self._lock = threading.Lock()

    def claim(self, ids: list[int]) -> list[int]:
        """The subset of `ids` this process now holds (already held ones included)."""
        if not self.db.is_postgresql or not ids:
            return ids
        rows = self._run(
            "SELECT id FROM unnest(%s::int[]) AS id WHERE pg_try_advisory_lock(%s, id)",
            (ids, CLAIM_NAMESPACE),
        )
        return [int(r[0]) for r in rows]

    def release(self, deadline_id: int) -> None:
        if self.db.is_postgresql:
            self._run("SELECT pg_advisory_unlock(%s, %s)", (CLAIM_NAMESPACE, deadline_id))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _run(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        import psycopg

        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    # Autocommit: the locks are session-level and must not wait for a transaction to end.
                    self._conn = psycopg.connect(self.db.libpq_url, autocommit=True, connect_timeout=5)
                return list(self._conn.execute(sql, params).fetchall())
            except psycopg.Error:
                # A lost connection has lost its claims too; another process may take them over, which
                # is safe. Start afresh next time.
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise


class TimerRunner:
    def __init__(
        self,
        service: DispatchService,
        clock: Clock,
        sweep_seconds: float = 5.0,
        horizon_seconds: float = 60.0,
        claim_batch: int = 200,
    ) -> None:
        self.service = service
        self.clock = clock
        self.sweep_seconds = sweep_seconds
        self.horizon_seconds = max(horizon_seconds, 2 * sweep_seconds)
        self.scheduler = AsyncIOScheduler(
            timezone=UTC, job_defaults={"misfire_grace_time": None, "coalesce": True}
        )
        self.claims = DeadlineClaims(service.db)
        # A sweep claims at most this many, so after an outage the backlog is shared by the processes
        # sweeping instead of being taken whole by the first one; a full batch sweeps again a second later.
        self.claim_batch = claim_batch
        self._scheduled: set[int] = set()
        self._lock = threading.Lock()
        self.fired = 0

    async def start(self) -> None:
        self.scheduler.start()
        self.service.listeners.append(self.on_commit)
        await self.sweep()
        self.scheduler.add_job(
            self.sweep, "interval", seconds=self.sweep_seconds, id="deadline-sweep", max_instances=1
        )

    def shutdown(self) -> None:
        if self.on_commit in self.service.listeners:
            self.service.listeners.remove(self.on_commit)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.claims.close()

    def _horizon(self) -> datetime:
        return self.clock.now() + timedelta(seconds=self.horizon_seconds * self.clock.speed)

    def on_commit(self, committed: Committed) -> None:
        """Called after a commit, possibly from a worker thread (APScheduler's add_job is thread-safe)."""
        horizon = self._horizon()
        soon = [(i, due) for i, due in committed.new_deadlines if due <= horizon]
        if soon:
            self._claim_and_schedule(soon)

    def _claim_and_schedule(self, candidates: list[tuple[int, datetime]], limit: int | None = None) -> int:
        """Claim (up to `limit`) of the candidates not scheduled here yet and schedule them; returns how many."""
        with self._lock:
            fresh = [(i, due) for i, due in candidates if i not in self._scheduled]
        if not fresh:
            return 0
        try:
            held = set(self.claims.claim([i for i, _ in fresh]))
        except Exception:
            log.exception("could not claim deadlines; the next sweep retries")
            return 0
        taken = [(i, due) for i, due in fresh if i in held]
        if limit is not None and len(taken) > limit:
            for deadline_id, _ in taken[limit:]:  # give the rest back for the other processes
                self.claims.release(deadline_id)
            taken = taken[:limit]
        for deadline_id, due in taken:
            self.schedule(deadline_id, due)
        return len(taken)

    def schedule(self, deadline_id: int, due: datetime) -> None:
        with self._lock:
            self._scheduled.add(deadline_id)
        run_at = datetime.now(UTC) + timedelta(seconds=self.clock.seconds_until(due))
        self.scheduler.add_job(
            self.fire,
            "date",
            run_date=run_at,
            args=[deadline_id, due],
            id=f"deadline-{deadline_id}",
            replace_existing=True,
        )

    async def fire(self, deadline_id: int, due: datetime) -> None:
        if self.clock.now() < due:  # woke a little early: keep the claim, try again at the due time
            self.schedule(deadline_id, due)
            return
        try:
            if await asyncio.to_thread(self.service.fire_deadline, deadline_id):
                self.fired += 1
                log.info("deadline %s applied", deadline_id)
        except Exception:
            log.exception("deadline %s failed; the sweep will retry it", deadline_id)
        finally:
            with self._lock:
                self._scheduled.discard(deadline_id)
            try:
                await asyncio.to_thread(self.claims.release, deadline_id)
            except Exception:
                log.warning("could not release the claim on deadline %s", deadline_id, exc_info=True)

    async def sweep(self) -> None:
        """Claim and schedule every pending deadline due within the horizon that is not scheduled yet."""
        try:
            due = await asyncio.to_thread(pending_deadlines, self.service.db, self._horizon())
            taken = await asyncio.to_thread(self._claim_and_schedule, due, self.claim_batch)
        except Exception:
            log.exception("deadline sweep failed")
            return
        if taken >= self.claim_batch and self.scheduler.running:
            self.scheduler.add_job(
                self.sweep,
                "date",
                run_date=datetime.now(UTC) + timedelta(seconds=1),
                id="deadline-sweep-more",
                replace_existing=True,
            )
