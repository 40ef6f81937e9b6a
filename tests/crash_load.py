"""The crash scenario: load with idempotent retries, screens on every process, one process SIGKILLed and
restarted mid-load, then checks on what the database and the screens hold. Used by tests/test_crash.py and
by bench/scaleout.py."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
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
    for attempt in range(200):
        client = clients[(start + attempt) % len(clients)]
        try:
            r = await client.post(path, json=body, headers=headers)
            if r.status_code in done:
                return r
        except httpx.HTTPError:
            pass
        outcome.retries += 1
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never succeeded")


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
                    (200, 409),
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
    system_log_entries: int
    unmatched_entries: int
    duplicate_firings: int
    fired_without_entry: int
    chain_ok: bool
    last_seq: int


def audit(url: str, outcome: Outcome, stopped_at_clock: Any) -> Audit:
    """Read the stopped system's database: what was created, fired and logged."""
    db = Database(url)
    try:
        with db.read() as s:
            incidents = {r for (r,) in s.execute(select(m.Incident.id))}
            idem = {(r.key, r.incident_id) for r in s.execute(select(m.IdempotencyRecord)).scalars()}
            deadlines = list(s.execute(select(m.DeadlineRow)).scalars())
            entries = list(
                s.execute(select(m.EscalationEntry).where(m.EscalationEntry.actor == "system")).scalars()
            )
        chain = verify_escalation_log(db)
        last = latest_seq(db)
    finally:
        db.dispose()
    assert {k: i for k, i in idem} == outcome.created or {
        k: i for k, i in idem
    }.items() >= outcome.created.items()
    margin = timedelta(seconds=2 * SPEED)  # due within the last 2 real seconds may still be in flight
    fired = {(d.incident_id, utc(d.due_at)) for d in deadlines if d.status == "fired"}
    pending_passed = sum(
        1 for d in deadlines if d.status == "pending" and utc(d.due_at) < stopped_at_clock - margin
    )
    matched: dict[tuple[str, Any], int] = {}
    unmatched = 0
    for e in entries:
        due = utc(e.at) - timedelta(seconds=e.late_seconds or 0)
        key = next(
            (k for k in fired if k[0] == e.incident_id and abs((k[1] - due).total_seconds()) < 0.05), None
        )
        if key is None:
            unmatched += 1
        else:
            matched[key] = matched.get(key, 0) + 1
    return Audit(
        incidents=len(incidents),
        idempotency_records=len(idem),
        fired=len(fired),
        cancelled=sum(1 for d in deadlines if d.status == "cancelled"),
        pending_passed=pending_passed,
        system_log_entries=len(entries),
        unmatched_entries=unmatched,
        duplicate_firings=sum(n - 1 for n in matched.values() if n > 1),
        fired_without_entry=len(fired) - len(matched),
        chain_ok=chain.ok,
        last_seq=last,
    )


def gaps_and_duplicates(seqs: list[int]) -> tuple[int, int]:
    """(missing seqs, duplicate or out-of-order seqs) in a screen's stream that started at since=0."""
    dups = sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b <= a)
    missing = (seqs[-1] - len(set(seqs))) if seqs else 0
    return missing, dups
