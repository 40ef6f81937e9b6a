"""Must show 1 and 2: SIGKILL a server process under load and lose nothing, double nothing.

Load: workers send reports round-robin to the processes with an Idempotency-Key, retrying on the next process
when one fails, and accept every third case; a dispatcher screen is connected to each process and reconnects
with `since`. One process is SIGKILLed mid-load and restarted. With GRIDDISPATCH_CLOCK_SPEED=600 the ack
limits (30 min = 3 s) keep passing throughout, so timers fire before, during and after the crash.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dispatch.clock import SpeedClock
from dispatch.db import Database
from tests.crash_load import audit, drive, gaps_and_duplicates
from tests.scaleout_support import SPEED, prepare, servers, start_all

pytestmark = [pytest.mark.crash, pytest.mark.e2e]


def clock_of(url: str) -> SpeedClock:
    from datetime import datetime

    from dispatch import models as m

    db = Database(url)
    with db.read() as s:
        anchor = s.get(m.Meta, "clock_anchor")
    db.dispose()
    assert anchor is not None
    return SpeedClock(SPEED, datetime.fromisoformat(anchor.value))


@pytest.mark.parametrize(("backend", "count"), [("postgresql", 3), ("sqlite", 1)])
def test_sigkill_under_load_loses_and_doubles_nothing(
    backend: str, count: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data_dir, url = prepare(backend, tmp_path, request)
    procs = servers(data_dir, url, count)
    start_all(procs)
    try:
        victim = 1 if count > 1 else 0
        outcome = asyncio.run(drive(procs, url, victim=victim))
        time.sleep(2.0)  # let the timers catch up with what came due at the end
    finally:
        for p in procs:
            p.stop()
    stopped = clock_of(url).now()
    a = audit(url, outcome, stopped)
    streams = [gaps_and_duplicates(s) for s in outcome.screens]
    print(
        f"\n[{backend}, {count} process(es), SIGKILL at {outcome.killed_at:.1f}s of {outcome.seconds:.1f}s] "
        f"201s: {len(outcome.created)}, incidents: {a.incidents}, idempotency records: {a.idempotency_records}, "
        f"retries: {outcome.retries}, accepts: {outcome.actions}; deadlines fired: {a.fired}, cancelled: "
        f"{a.cancelled}, passed but pending: {a.pending_passed}; firings logged: {a.firings_logged} "
        f"({a.system_log_entries} system escalation-log entries), matching no claim: {a.unclaimed_firings}, "
        f"repeated tier timeouts: {a.repeated_tier_timeouts}; last seq {a.last_seq}; screens: "
        + ", ".join(
            f"{len(s)} events up to {s[-1] if s else 0} (missing {g}, dup {d})"
            for s, (g, d) in zip(outcome.screens, streams, strict=True)
        )
        + f"; screen reconnects: {outcome.reconnects}"
    )
    # Every report that got a 201 exists exactly once; no retry made a second case.
    assert len(set(outcome.created.values())) == len(outcome.created)
    assert a.incidents == a.idempotency_records == len(outcome.created)
    # Every deadline that passed was applied, and exactly once.
    assert a.fired > 0 and a.pending_passed == 0
    assert a.firings_logged > 0 and a.unclaimed_firings == 0 and a.repeated_tier_timeouts == 0
    assert a.firings_logged <= a.fired
    assert a.chain_ok
    # Every screen's stream is gap-free and duplicate-free by seq, from 1 on.
    for seqs, (missing, dups) in zip(outcome.screens, streams, strict=True):
        assert seqs and seqs[0] == 1
        assert (missing, dups) == (0, 0)
        assert seqs == list(range(1, seqs[-1] + 1))
    assert outcome.reconnects > 0  # the victim's screen really lost its process
