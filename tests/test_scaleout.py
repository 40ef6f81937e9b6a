"""Scale-out guarantees: readers see every seq once under concurrent writers; timers fire once per deadline
even when several processes run them against the same due deadlines (both backends)."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from dispatch import models as m
from dispatch.bootstrap import Container
from dispatch.db import Database
from dispatch.queries import events_after, latest_seq
from dispatch.service import EVENT_SEQ
from tests.conftest import Demo
from tests.scaleout_support import applied_in_logs, grid_points, prepare, servers, start_all
from tests.server import Api


class Rollback(Exception):
    pass


def tail(read_after, stop: threading.Event, seen: list[int], problems: list[str]) -> None:  # type: ignore[no-untyped-def]
    """A reader that polls `seq > last` like the event hub does, and notes any seq it skipped."""
    last = 0
    while True:
        finishing = stop.is_set()
        batch = read_after(last)
        for seq in batch:
            if seq != last + 1:
                problems.append(f"after {last} came {seq}")
            last = seq
            seen.append(seq)
        if finishing and not batch:
            return
        if not batch:
            time.sleep(0.001)


def test_concurrent_writers_and_a_tailing_reader_see_every_seq_exactly_once(
    container: Container, demo: Demo
) -> None:
    """Must show 4: writers in overlapping transactions, some slow to commit and some rolling back, while a
    reader tails the outbox: the reader sees 1..N, each once, in order, and never has to skip."""
    c = container
    stop = threading.Event()
    seen: list[int] = []
    problems: list[str] = []
    errors: list[BaseException] = []

    def reporter(n: int) -> None:
        try:
            for _ in range(n):
                c.service.submit_report(demo.report(), demo.actor("dispatcher"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def slow_writer(k: int) -> None:
        # Takes its seq, then lingers before committing (or rolls back): the late-commit case.
        rng = random.Random(k)
        try:
            for _ in range(20):
                try:
                    with c.db.write() as s:
                        seq = c.service._bump(s, EVENT_SEQ)
                        s.add(
                            m.Event(
                                seq=seq,
                                type="test.slow",
                                at=datetime.now(UTC),
                                incident_id=None,
                                county="360102",
                                jurisdiction=["360102"],
                                data={"writer": k},
                            )
                        )
                        s.flush()
                        time.sleep(rng.uniform(0, 0.01))
                        if rng.random() < 0.2:
                            raise Rollback
                except Rollback:
                    pass
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    start = latest_seq(c.db)
    reader = threading.Thread(
        target=tail,
        args=(
            lambda last: [e["seq"] for e in events_after(c.db, max(last, start), 200)],
            stop,
            seen,
            problems,
        ),
    )
    reader.start()
    writers = [threading.Thread(target=reporter, args=(12,)) for _ in range(4)]
    writers += [threading.Thread(target=slow_writer, args=(k,)) for k in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    reader.join()
    assert errors == []
    seen = [s for s in seen if s > start]
    problems = [p for p in problems if not p.startswith("after 0 ")]
    end = latest_seq(c.db)
    print(f"\n[{c.db.engine.dialect.name}] reader saw {len(seen)} events, seq {start + 1}..{end}")
    assert problems == []
    assert seen == list(range(start + 1, end + 1))
    with c.db.read() as s:
        assert s.execute(select(func.count()).select_from(m.Event)).scalar_one() == end


def test_the_reader_check_catches_a_plain_sequence(pg_database: str) -> None:
    """Control for the test above: with a plain PostgreSQL SEQUENCE (no counter row lock), a transaction that
    takes its number early and commits late is skipped by a reader tailing `n > last`."""
    db = Database(pg_database)
    try:
        with db.write() as s:
            s.execute(text("CREATE SEQUENCE naive_seq"))
            s.execute(text("CREATE TABLE naive_event (n bigint PRIMARY KEY)"))
        stop = threading.Event()
        seen: list[int] = []
        problems: list[str] = []

        def read_after(last: int) -> list[int]:
            with db.read() as s:
                q = text("SELECT n FROM naive_event WHERE n > :last ORDER BY n LIMIT 200")
                return [int(r[0]) for r in s.execute(q, {"last": last})]

        def writer(k: int) -> None:
            rng = random.Random(k)
            for _ in range(25):
                with db.write() as s:
                    n = s.execute(text("SELECT nextval('naive_seq')")).scalar_one()
                    time.sleep(rng.uniform(0, 0.01))
                    s.execute(text("INSERT INTO naive_event VALUES (:n)"), {"n": n})

        reader = threading.Thread(target=tail, args=(read_after, stop, seen, problems))
        reader.start()
        writers = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        stop.set()
        reader.join()
        with db.read() as s:
            committed = s.execute(text("SELECT count(*) FROM naive_event")).scalar_one()
        missed = committed - len(seen)
        print(f"\nplain sequence: {committed} committed, the tailing reader saw {len(seen)}, missed {missed}")
        assert missed > 0, "expected the naive design to lose events for a tailing reader"
    finally:
        db.dispose()


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_processes_running_timers_escalate_each_passed_deadline_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Must show 3: deadlines pass while no server runs; then two processes start together, both sweep the
    same due deadlines, and every case escalates from the grid exactly once."""
    data_dir, url = prepare(backend, tmp_path, request)
    # Small claim batches, so the two sweeping processes visibly share the backlog.
    first, b, c = servers(data_dir, url, 3, timer_claim_batch=4)
    first.start()
    try:
        api = Api(first.url)
        ids = []
        for i, body in enumerate(grid_points(url, 24)):
            r = api.report("dispatcher", body, key=f"timers-{i}")
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
    finally:
        first.stop()
    time.sleep(3.5)  # the 30-minute (3 s real) ack limits all pass while nothing runs
    try:
        start_all([b, c])
        db = Database(url)
        try:
            deadline = time.monotonic() + 30
            while True:
                with db.read() as s:
                    waiting = s.execute(
                        select(func.count())
                        .select_from(m.Incident)
                        .where(m.Incident.id.in_(ids), m.Incident.tier == "grid")
                    ).scalar_one()
                if waiting == 0:
                    break
                assert time.monotonic() < deadline, f"{waiting} cases never escalated"
                time.sleep(0.2)
            time.sleep(1.0)  # room for a duplicate firing to show up
            with db.read() as s:
                rows = s.execute(
                    select(m.EscalationEntry.incident_id, func.count())
                    .where(
                        m.EscalationEntry.incident_id.in_(ids),
                        m.EscalationEntry.from_tier == "grid",
                        m.EscalationEntry.reason == "ack_timeout",
                    )
                    .group_by(m.EscalationEntry.incident_id)
                ).all()
        finally:
            db.dispose()
        counts = dict(rows)
        applied = applied_in_logs([b, c])
        print(
            f"\n[{backend}] {len(ids)} cases; grid→community escalations per case: "
            f"{sorted(set(counts.values()))}; deadlines applied per process: {applied}"
        )
        assert counts == dict.fromkeys(ids, 1)
    finally:
        b.stop()
        c.stop()


def race_same_key(containers: list[Container], demo: Demo, key: str) -> list[dict[str, object]]:
    barrier = threading.Barrier(len(containers))
    answers: list[dict[str, object]] = []
    errors: list[BaseException] = []

    def submit(c: Container) -> None:
        try:
            barrier.wait()
            answers.append(c.service.submit_report(demo.report(), demo.actor("dispatcher"), key))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(c,)) for c in containers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return answers


def test_the_same_idempotency_key_racing_on_two_processes_makes_one_case(
    container: Container, demo: Demo, data_dir: Path
) -> None:
    """Two service instances (separate connection pools, as two processes have) get the same key at the same
    moment: one case is created and both callers get the same answer (the loser reads the winner's)."""
    from dispatch.bootstrap import build
    from dispatch.settings import Settings

    other = build(Settings(data_dir=data_dir), clock=container.clock)
    try:
        for round_ in range(8):
            first, second = race_same_key([container, other], demo, f"race-{round_}")
            assert first == second
        with container.db.read() as s:
            assert s.execute(select(func.count()).select_from(m.Incident)).scalar_one() == 8
            assert s.execute(select(func.count()).select_from(m.IdempotencyRecord)).scalar_one() == 8
    finally:
        other.db.dispose()
