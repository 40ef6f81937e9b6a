"""Scale-out numbers: report throughput and cross-process event latency, SQLite ×1 vs PostgreSQL ×1 and ×N.

    .venv/bin/python -m bench.scaleout                # default: 12 s per shape, 16 concurrent clients
    .venv/bin/python -m bench.scaleout --seconds 20 --clients 32 --processes 3

Each shape starts real `griddispatch serve` processes on a fresh database (PostgreSQL: the machine's server,
GRIDDISPATCH_TEST_PG_URL). Load clients post reports round-robin over the processes; one dispatcher screen on
the LAST process measures how long an event committed by any process takes to reach it (POST sent → event
received). Prints one line per shape and the ratio of throughput to the SQLite ×1 baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests import pg
from tests.scaleout_support import grid_points
from tests.server import Api, ServerProcess


async def measure(procs: list[ServerProcess], url: str, seconds: float, clients: int) -> dict[str, float]:
    api = Api(procs[0].url)
    token = api.token("dispatcher")
    points = grid_points(url, 32)
    sent_at: dict[str, float] = {}  # incident id → when its POST was sent
    arrived_at: dict[str, float] = {}  # incident id → when the screen got incident.created
    answered_at: dict[str, float] = {}  # incident id → when its 201 came back
    latencies: list[float] = []
    stop = asyncio.Event()

    async def screen() -> None:
        async with connect(procs[-1].ws_url) as ws:
            await ws.send(json.dumps({"token": token, "since": None}))
            while not stop.is_set():
                try:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except TimeoutError:
                    continue
                if msg.get("type") == "incident.created":
                    arrived_at[msg["incident_id"]] = time.perf_counter()

    async def client(n: int, http: list[httpx.AsyncClient]) -> None:
        i = 0
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            body = dict(points[(n + i) % len(points)])
            body["description"] = f"bench {n}-{i}"
            t0 = time.perf_counter()
            r = await http[(n + i) % len(http)].post(
                "/reports", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status_code == 201, r.text
            sent_at[r.json()["id"]] = t0
            answered_at[r.json()["id"]] = time.perf_counter()
            latencies.append(time.perf_counter() - t0)
            i += 1

    watcher = asyncio.create_task(screen())
    await asyncio.sleep(0.5)
    http = [httpx.AsyncClient(base_url=p.url + "/api/v1", timeout=30) for p in procs]
    began = time.perf_counter()
    await asyncio.gather(*(client(n, http) for n in range(clients)))
    elapsed = time.perf_counter() - began
    await asyncio.sleep(1.0)
    stop.set()
    await watcher
    for h in http:
        await h.aclose()
    arrived = [arrived_at[i] - t for i, t in sent_at.items() if i in arrived_at]
    # Negative when the screen heard of the case before the client had read its 201.
    after_201 = [arrived_at[i] - t for i, t in answered_at.items() if i in arrived_at]
    q = statistics.quantiles
    return {
        "reports_per_s": len(latencies) / elapsed,
        "post_p50_ms": q(latencies, n=100)[49] * 1000,
        "post_p99_ms": q(latencies, n=100)[98] * 1000,
        "event_p50_ms": q(arrived, n=100)[49] * 1000 if len(arrived) > 2 else float("nan"),
        "event_p99_ms": q(arrived, n=100)[98] * 1000 if len(arrived) > 2 else float("nan"),
        "after_201_p50_ms": q(after_201, n=100)[49] * 1000 if len(after_201) > 2 else float("nan"),
        "delivered": len(arrived) / max(1, len(sent_at)),
    }


def run_shape(backend: str, count: int, seconds: float, clients: int, tmp: Path) -> dict[str, Any]:
    server = pg.Server.from_env()
    name = None
    if backend == "postgresql":
        name = server.create(server.name(f"bench{count}"))
        url = server.url(name)
    else:
        url = f"sqlite:///{tmp / 'griddispatch.sqlite3'}"
    procs = [ServerProcess(tmp, name=f"bench{i}", database_url=url) for i in range(count)]
    try:
        procs[0].start(timeout=180)  # the first start migrates and loads the demo county
        for p in procs[1:]:
            p.launch()
        for p in procs[1:]:
            p.wait_ready()
        return asyncio.run(measure(procs, url, seconds, clients))
    finally:
        for p in procs:
            p.stop()
        if name:
            server.drop(name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--processes", type=int, default=3)
    args = parser.parse_args()
    shapes = [("sqlite", 1), ("postgresql", 1), ("postgresql", args.processes)]
    baseline = None
    for backend, count in shapes:
        with tempfile.TemporaryDirectory() as tmp:
            r = run_shape(backend, count, args.seconds, args.clients, Path(tmp))
        baseline = baseline or r["reports_per_s"]
        print(
            f"{backend:>10} ×{count}: {r['reports_per_s']:7.1f} reports/s "
            f"(×{r['reports_per_s'] / baseline:.2f} of sqlite ×1), POST p50 {r['post_p50_ms']:.1f} ms "
            f"p99 {r['post_p99_ms']:.1f} ms; event to a screen on the last process p50 "
            f"{r['event_p50_ms']:.1f} ms p99 {r['event_p99_ms']:.1f} ms (p50 {r['after_201_p50_ms']:+.1f} ms "
            f"after the 201; {r['delivered']:.0%} delivered)",
            flush=True,
        )


if __name__ == "__main__":
    main()
