"""Timers: deadlines live in the database (the truth); APScheduler holds in memory only the ones due soon.

On start and then every `sweep_seconds` the runner loads pending deadlines due within the horizon (including
ones that passed while the server was down) and schedules them; new deadlines are scheduled right after the
commit that made them. A firing re-enters the service as a command; the service claims the deadline row in the
same transaction as its effect, so each deadline takes effect at most once, and a deadline whose case moved on
was already cancelled and does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from dispatch.clock import Clock
from dispatch.queries import pending_deadlines
from dispatch.service import Committed, DispatchService

log = logging.getLogger(__name__)


class TimerRunner:
    def __init__(
        self,
        service: DispatchService,
        clock: Clock,
        sweep_seconds: float = 5.0,
        horizon_seconds: float = 60.0,
    ) -> None:
        self.service = service
        self.clock = clock
        self.sweep_seconds = sweep_seconds
        self.horizon_seconds = max(horizon_seconds, 2 * sweep_seconds)
        self.scheduler = AsyncIOScheduler(
            timezone=UTC, job_defaults={"misfire_grace_time": None, "coalesce": True}
        )
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

    def on_commit(self, committed: Committed) -> None:
        """Called after a commit, possibly from a worker thread (APScheduler's add_job is thread-safe)."""
        horizon = self.clock.now() + timedelta(seconds=self.horizon_seconds * self.clock.speed)
        for deadline_id, due in committed.new_deadlines:
            if due <= horizon:
                self.schedule(deadline_id, due)

    def schedule(self, deadline_id: int, due: datetime) -> None:
        with self._lock:
            if deadline_id in self._scheduled:
                return
            self._scheduled.add(deadline_id)
        run_at = datetime.now(UTC) + timedelta(seconds=self.clock.seconds_until(due))
        self.scheduler.add_job(
            self.fire,
            "date",
            run_date=run_at,
            args=[deadline_id],
            id=f"deadline-{deadline_id}",
            replace_existing=True,
        )

    async def fire(self, deadline_id: int) -> None:
        try:
            if await asyncio.to_thread(self.service.fire_deadline, deadline_id):
                self.fired += 1
        except Exception:
            log.exception("deadline %s failed; the sweep will retry it", deadline_id)
        finally:
            with self._lock:
                self._scheduled.discard(deadline_id)

    async def sweep(self) -> None:
        """Schedule every pending deadline due within the horizon that is not scheduled yet."""
        horizon = self.clock.now() + timedelta(seconds=self.horizon_seconds * self.clock.speed)
        try:
            due = await asyncio.to_thread(pending_deadlines, self.service.db, horizon)
        except Exception:
            log.exception("deadline sweep failed")
            return
        for deadline_id, due_at in due:
            self.schedule(deadline_id, due_at)
