"""The crash scenario: load with idempotent retries, screens on every process, one process SIGKILLed and
restarted mid-load, then checks on what the database and the screens hold. Used by tests/test_crash.py and
by bench/scaleout.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from websockets.asyncio.client import connect

from dispatch import models as m
from dispatch.clock import utc
from dispatch.db import Database
from dispatch.queries import latest_seq, verify_escalation_log
from tests.scaleout_support import SPEED, grid_points
from tests.server import Api, ServerProcess


@dataclass
class Outcome:
    created: dict[str, str] = field(default_factory=dict)  # idempotency key → incident id from a 201
    retries: int = 0
    actions: int = 0
    screens: list[list[int]] = field(default_factory=list)
    reconnects: int = 0
    killed_at: float = 0.0
    seconds: float = 0.0


class Screen:
    """A dispatcher screen on one process; reconnects with `since` whenever its process goes away."""

    def __init__(self, proc: ServerProcess, token: str, outcome: Outcome) -> None:
        self.proc, self.token, self.outcome = proc, token, outcome
        self.seqs: list[int] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with connect(self.proc.ws_url, open_timeout=2) as ws:
                    since = self.seqs[-1] if self.seqs else 0
                    await ws.send(json.dumps({"token": self.token, "since": since}))
                    while not stop.is_set():
                        try:
                            msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                        except TimeoutError:
                            continue
                        if msg.get("type") not in ("welcome", "heartbeat") and "seq" in msg:
                            self.seqs.append(msg["seq"])
            except (OSError, TimeoutError, Exception):  # the process is down: try again soon
                if stop.is_set():
                    return
                self.outcome.reconnects += 1
                await asyncio.sleep(0.2)


async def _post_until_done(
    clients: list[httpx.AsyncClient],
    start: int,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    outcome: Outcome,
    done: tuple[int, ...],
) -> httpx.Response:
    """Round-robin over the processes; on a connection error or 5xx try the next one (same key)."""
    last = "no answer"
    for attempt in range(200):
        client = clients[(start + attempt) % len(clients)]
        try:
            r = await client.post(path, json=body, headers=headers)
            if r.status_code in done:
                return r
            last = f"{r.status_code} {r.text[:300]}"
            if r.status_code < 500:
                break  # a refusal, not a failure: retrying will not change it
        except httpx.HTTPError as exc:
            last = repr(exc)
        outcome.retries += 1
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} did not succeed: {last}")


async def drive(
    procs: list[ServerProcess],
    url: str,
    victim: int,
    load_seconds: float = 8.0,
    kill_after: float = 2.5,
    workers: int = 6,
) -> Outcome:
    outcome = Outcome()
    api = Api(procs[0].url)
    tokens = {u: api.token(u) for u in ("dispatcher", "grid", "grid2")}
    points = grid_points(url, 64)
    db = Database(url)
    with db.read() as s:
        owners = {
            u.unit_code: u.username for u in s.execute(select(m.User)).scalars() if u.role == "grid_worker"
        }
    db.dispose()
    stop_screens = asyncio.Event()
    screens = [Screen(p, tokens["dispatcher"], outcome) for p in procs]
    screen_tasks = [asyncio.create_task(s.run(stop_screens)) for s in screens]
    clients = [httpx.AsyncClient(base_url=p.url + "/api/v1", timeout=5) for p in procs]
    began = time.monotonic()

    async def worker(w: int) -> None:
        i = 0
        while time.monotonic() - began < load_seconds:
            key = f"crash-{w}-{i}"
            body = points[(w * 7 + i) % len(points)]
            r = await _post_until_done(
                clients,
                w + i,
                "/reports",
                body,
                {"Authorization": f"Bearer {tokens['dispatcher']}", "Idempotency-Key": key},
                outcome,
                (201,),
            )
            outcome.created[key] = r.json()["id"]
            if i % 3 == 0:  # the grid worker accepts every third case (its ack clock stops)
                owner = owners[r.json()["grid"]["code"]]
                await _post_until_done(
                    clients,
                    w + i + 1,
                    f"/incidents/{r.json()['id']}/actions",
                    {"action": "accept"},
                    {"Authorization": f"Bearer {tokens[owner]}"},
                    outcome,
                    (200, 403, 409),  # 403/409: the case moved on (escalated) meanwhile
                )
                outcome.actions += 1
            i += 1
            await asyncio.sleep(0.05)

    async def killer() -> None:
        await asyncio.sleep(kill_after)
        procs[victim].kill()
        outcome.killed_at = time.monotonic() - began
        await asyncio.sleep(0.5)
        await asyncio.to_thread(procs[victim].start)

    await asyncio.gather(killer(), *(worker(w) for w in range(workers)))
    outcome.seconds = time.monotonic() - began
    for c in clients:
        await c.aclose()
    # Every screen catches up with the outbox as it stands now (timers keep adding events meanwhile).
    db = Database(url)
    target = latest_seq(db)
    db.dispose()
    limit = time.monotonic() + 20
    while any(not s.seqs or s.seqs[-1] < target for s in screens) and time.monotonic() < limit:
        await asyncio.sleep(0.1)
    stop_screens.set()
    await asyncio.gather(*screen_tasks)
    outcome.screens = [s.seqs for s in screens]
    return outcome


@dataclass
class Audit:
    incidents: int
    idempotency_records: int
    fired: int
    cancelled: int
    pending_passed: int
    firings_logged: int  # transactions in which the system wrote escalation-log entries for a deadline
    system_log_entries: int
    unclaimed_firings: int  # logged firings that match no claimed deadline: a second application
    repeated_tier_timeouts: int  # a case escalated twice from the same tier for the same clock
    chain_ok: bool
    last_seq: int


def audit(url: str, outcome: Outcome, stopped_at_clock: Any) -> Audit:
    """Read the stopped system's database: what was created, fired and logged.

    A deadline's firing is one transaction: the claim sets `fired_at = now` and every log entry it writes has
    `at = now` and the transaction's seq. So each logged firing (system entries grouped by case and seq) must
    match a claimed deadline by (case, fired_at); applying a deadline twice would leave a logged firing that
    matches none, since the row records only one claim."""
    db = Database(url)
    try:
        with db.read() as s:
            incidents = {r for (r,) in s.execute(select(m.Incident.id))}
            idem = {r.key: r.incident_id for r in s.execute(select(m.IdempotencyRecord)).scalars()}
            deadlines = list(s.execute(select(m.DeadlineRow)).scalars())
            entries = list(
                s.execute(select(m.EscalationEntry).where(m.EscalationEntry.actor == "system")).scalars()
            )
            opened = dict(
                s.execute(
                    select(m.TimelineEntry.incident_id, func.min(m.TimelineEntry.seq)).group_by(
                        m.TimelineEntry.incident_id
                    )
                ).all()
            )
        chain = verify_escalation_log(db)
        last = latest_seq(db)
    finally:
        db.dispose()
    assert idem.items() >= outcome.created.items(), "a 201 answer differs from the stored first answer"
    margin = timedelta(seconds=2 * SPEED)  # due within the last 2 real seconds may still be in flight
    claimed = {(d.incident_id, utc(d.fired_at)) for d in deadlines if d.status == "fired" and d.fired_at}
    # Entries written when the case was opened (e.g. severity skips a tier) are not deadline firings.
    timer_entries = [e for e in entries if e.seq != opened.get(e.incident_id)]
    firings = {(e.incident_id, e.seq): (e.incident_id, utc(e.at)) for e in timer_entries}
    tier_timeouts = Counter(
        (e.incident_id, e.from_tier, e.reason)
        for e in timer_entries
        if e.reason in ("ack_timeout", "resolve_timeout")
    )
    return Audit(
        incidents=len(incidents),
        idempotency_records=len(idem),
        fired=len(claimed),
        cancelled=sum(1 for d in deadlines if d.status == "cancelled"),
        pending_passed=sum(
            1 for d in deadlines if d.status == "pending" and utc(d.due_at) < stopped_at_clock - margin
        ),
        firings_logged=len(firings),
        system_log_entries=len(timer_entries),
        unclaimed_firings=sum(1 for key in firings.values() if key not in claimed),
        repeated_tier_timeouts=sum(n - 1 for n in tier_timeouts.values()),
        chain_ok=chain.ok,
        last_seq=last,
    )


def gaps_and_duplicates(seqs: list[int]) -> tuple[int, int]:
    """(missing seqs, duplicate or out-of-order seqs) in a screen's stream that started at since=0."""
    dups = sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b <= a)
    missing = (seqs[-1] - len(set(seqs))) if seqs else 0
    return missing, dups
