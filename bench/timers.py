"""Timers: 100,000 pending deadlines in the table, a few thousand of them on real cases falling due during
the run; lateness of firing and the server's memory.

Setup (before the measured server starts): the demo county in a fresh SQLite file, the service built
in-process on the speed clock the server will use (same GRIDDISPATCH_CLOCK_SPEED, same persisted anchor),
`cases` reports submitted from a few threads (group commit) — each holds a yellow-light (80 %) and an ack
(100 %) deadline — and the rest of the 100,000 rows bulk-inserted (SQLAlchemy Core) with dues days ahead on
case ids that do not exist. Then `griddispatch serve` runs until the real cases' deadlines have passed.

Lateness = (fired_at − due_at) / speed, in real seconds, from the deadline rows after the run; a deadline
due in the window but still pending counts as late until the end. Baseline in the same run: APScheduler's
in-memory job store firing the same number of no-op jobs on the same schedule. Target: p99 ≤ 1 s.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from bench.common import Figure, fresh_data_dir, percentile
from tests.server import ServerProcess

TARGET_S = 1.0
WINDOW = timedelta(minutes=31)  # of service time after the last report: its yellow light and ack
YELLOW = timedelta(minutes=24)  # 80 % of the 30-minute ack limit: a case's first deadline


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return float("nan")


def _prepare(data: Path, speed: float, cases: int, rate: float, total: int) -> tuple[datetime, datetime]:
    """Report the cases (one every 1/rate real seconds of the run's timeline) and add the filler rows.

    The cases are reported on a hand-moved clock at the service times they would have on the run's speed
    clock; the run's anchor is written afterwards (`_anchor_for`) so the first deadline falls due a few
    seconds after the server is ready, however long this setup took. Returns the service time of the first
    report and the latest due of the cases' first deadlines."""
    from dispatch import models as m
    from dispatch.bootstrap import build
    from dispatch.clock import FakeClock, utc
    from dispatch.domain import Actor, NewReport
    from dispatch.settings import Settings

    first = datetime.now(UTC).replace(microsecond=0)
    clock = FakeClock(first)
    c = build(Settings(data_dir=data, clock_speed=speed), clock=clock)
    try:
        rng = random.Random(11)
        grids = sorted(code for code, u in c.tree.units.items() if u.level == "grid")
        dispatcher = Actor("dispatcher", "county_dispatcher", "360102")
        step = timedelta(seconds=speed / rate)
        for _ in range(cases):
            p = c.tree.units[rng.choice(grids)].geometry.representative_point()
            report = NewReport(p.x, p.y, "sanitation", "normal", "楼道里堆满了垃圾", "hotline")
            c.service.submit_report(report, dispatcher)
            clock.advance(step)
        last_report = clock.now()
        with c.db.read() as s:
            real = s.execute(select(func.count()).select_from(m.DeadlineRow)).scalar_one()
            # The yellow lights and acks (24 and 30 minutes after the report) fall due during the run; the
            # cases' resolve clocks (hours) do not.
            last_due = s.execute(
                select(func.max(m.DeadlineRow.due_at)).where(m.DeadlineRow.due_at <= last_report + WINDOW)
            ).scalar_one()
        rows = [
            {
                "incident_id": f"360102-29990101-{i:06d}",
                "clock": "resolve",
                "due_at": first + timedelta(days=rng.uniform(3, 90)),
                "status": "pending",
            }
            for i in range(max(0, total - real))
        ]
        with c.db.write() as s:
            for start in range(0, len(rows), 10_000):
                s.execute(insert(m.DeadlineRow), rows[start : start + 10_000])
        return first, utc(last_due)
    finally:
        c.db.dispose()


def _anchor_for(speed: float, real_at: float, service_at: datetime) -> datetime:
    """The speed clock's anchor that shows `service_at` at the real time `real_at` (epoch seconds):
    service(t) = anchor + (t − anchor) × speed."""
    anchor = (speed * real_at - service_at.timestamp()) / (speed - 1)
    return datetime.fromtimestamp(anchor, UTC)


def _real(speed: float, anchor: datetime, service_at: datetime) -> float:
    a = anchor.timestamp()
    return a + (service_at.timestamp() - a) / speed


def _lateness(data: Path, speed: float, until_virtual: datetime) -> tuple[list[float], list[float], int]:
    """Real-second lateness of the deadlines due before `until_virtual`, their dues as offsets (real s from
    the first), and how many were still pending."""
    import sqlite3

    from dispatch.clock import utc

    with sqlite3.connect(data / "griddispatch.sqlite3") as con:
        rows = con.execute(
            "select due_at, fired_at, status from deadline where incident_id not like '%-29990101-%'"
        ).fetchall()
    late, dues, pending = [], [], 0
    for due_s, fired_s, status in rows:
        due = utc(datetime.fromisoformat(due_s))
        if due > until_virtual or status == "cancelled":
            continue
        dues.append(due)
        if status == "fired" and fired_s:
            late.append((utc(datetime.fromisoformat(fired_s)) - due).total_seconds() / speed)
        else:
            pending += 1
            late.append((until_virtual - due).total_seconds() / speed)
    first = min(dues) if dues else until_virtual
    return late, sorted((d - first).total_seconds() / speed for d in dues), pending


async def _apscheduler(offsets: list[float]) -> list[float]:
    """The baseline: no-op jobs on the memory job store, at the same real offsets as our deadlines."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    scheduler = AsyncIOScheduler(timezone=UTC, job_defaults={"misfire_grace_time": None, "coalesce": True})
    late: list[float] = []

    def job(at: float) -> None:
        late.append(time.time() - at)

    scheduler.start()
    start = time.time() + 2.0
    for i, offset in enumerate(offsets):
        at = start + offset
        scheduler.add_job(job, "date", run_date=datetime.fromtimestamp(at, UTC), args=[at], id=f"j{i}")
    await asyncio.sleep(max(offsets, default=0) + 3.0)
    while len(late) < len(offsets) and time.time() < start + max(offsets, default=0) + 30:
        await asyncio.sleep(0.2)
    scheduler.shutdown(wait=False)
    return late


def run(quick: bool = False) -> list[Figure]:
    speed, cases, rate, total = (120.0, 100, 20.0, 10_000) if quick else (60.0, 1_000, 15.0, 100_000)
    lead = 8.0 if quick else 15.0  # real seconds from starting the server to the first deadline
    data = fresh_data_dir("timers")
    prepared = time.perf_counter()
    first_report, last_due = _prepare(data, speed, cases, rate, total)
    setup_s = time.perf_counter() - prepared
    anchor = _anchor_for(speed, time.time() + lead, first_report + YELLOW)
    _write_anchor(data, anchor)
    server = ServerProcess(data, clock_speed=speed, access_log="false", log_json="false").start()
    pid = server.proc.pid if server.proc else 0
    rss_start = _rss_mb(pid)
    rss_peak = rss_start
    margin = 2.0
    headroom = _real(speed, anchor, first_report + YELLOW) - time.time()
    try:
        while time.time() < _real(speed, anchor, last_due) + margin:
            rss_peak = max(rss_peak, _rss_mb(pid))
            time.sleep(0.5)
    finally:
        end_real = time.time()
        server.stop()
    until = anchor + (datetime.fromtimestamp(end_real - margin, UTC) - anchor) * speed
    late, offsets, pending = _lateness(data, speed, until)
    base = asyncio.run(_apscheduler(offsets))
    ms = 1000.0
    note = (
        f"{total:,} pending rows; {len(late):,} deadlines of {cases:,} cases (reported {rate:g}/s) due during "
        f"the run, clock ×{speed:g}; setup {setup_s:.0f} s, first due {headroom:.1f} s after the server was "
        f"ready; {pending} due but still pending at the end"
    )
    p99 = percentile(late, 99)
    return [
        Figure(
            "timers: lateness p50",
            percentile(late, 50) * ms,
            "ms",
            "APScheduler memory p50",
            percentile(base, 50) * ms,
            note=note,
        ),
        Figure(
            "timers: lateness p99",
            p99 * ms,
            "ms",
            "APScheduler memory p99",
            percentile(base, 99) * ms,
            f"≤ {TARGET_S * ms:.0f} ms",
            p99 <= TARGET_S,
        ),
        Figure(
            "timers: lateness max",
            max(late, default=float("nan")) * ms,
            "ms",
            "APScheduler memory max",
            max(base, default=float("nan")) * ms,
        ),
        Figure("timers: server RSS (peak)", rss_peak, "MB", "same server when ready", rss_start),
    ]


def _write_anchor(data: Path, anchor: datetime) -> None:
    import sqlite3

    with sqlite3.connect(data / "griddispatch.sqlite3") as con:
        con.execute(
            "insert or replace into meta(key, value) values ('clock_anchor', ?)", (anchor.isoformat(),)
        )


if __name__ == "__main__":
    for f in run(quick="--quick" in sys.argv):
        print(f.as_dict())
