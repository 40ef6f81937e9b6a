"""Ingest: reports per second through HTTP on one uvicorn process (SQLite WAL, synchronous=FULL), including
routing, the workflow, the transaction with timeline/log/event, and publishing to 100 connected screens.

Baseline in the same run: a bare FastAPI endpoint parsing the same body (bench/bare_app.py).
Target: >= 50 % of the baseline's req/s with every report durably committed before its 201.

The 100 screens are a county's wall: the county centre, every township, every community and the rest on
grids, so each event reaches the few screens whose jurisdiction holds it (as on a real command platform).
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Figure, fresh_data_dir, wrk_post
from dispatch.bootstrap import load_active_tree
from dispatch.db import Database
from tests.server import Api, ServerProcess, free_port


def report_bodies(db_file: Path, count: int, seed: int = 7) -> tuple[list[str], list[str]]:
    """Report bodies at points inside random grids, and a 100-screen jurisdiction mix."""
    db = Database(f"sqlite:///{db_file}")
    tree = load_active_tree(db)
    db.dispose()
    rng = random.Random(seed)
    grids = sorted(c for c, u in tree.units.items() if u.level == "grid")
    categories = ["sanitation", "municipal", "dispute", "public_security", "illegal_building", "livelihood"]
    bodies = []
    for _ in range(count):
        p = tree.units[rng.choice(grids)].geometry.representative_point()
        bodies.append(
            json.dumps(
                {
                    "lon": round(p.x + rng.uniform(-2e-4, 2e-4), 6),
                    "lat": round(p.y + rng.uniform(-2e-4, 2e-4), 6),
                    "category": rng.choice(categories),
                    "description": "小区门口垃圾满溢，已经三天没有清运了，影响居民出行",
                    "address": "东湖区某小区",
                    "reporter": {"name": "王五", "phone": "13812341234"},
                },
                ensure_ascii=False,
            )
        )
    levels = {lv: sorted(c for c, u in tree.units.items() if u.level == lv) for lv in ("county", "township", "community")}
    scopes = levels["county"] + levels["township"] + levels["community"]
    scopes += grids[: max(0, 100 - len(scopes))]
    return bodies, scopes[:100]


def _bare_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "bench.bare_app:create_app", "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(200):
        try:
            httpx.get(url + "/docs", timeout=0.5)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("bare server did not start")


def run(quick: bool = False) -> list[Figure]:
    seconds, connections = (3.0, 16) if quick else (10.0, 50)
    data = fresh_data_dir("ingest")
    bodies, scopes = report_bodies(data / "griddispatch.sqlite3", 300)

    bare, bare_url = _bare_server()
    try:
        wrk_post(bare_url + "/api/v1/reports", bodies, None, 1.0, connections)  # warm-up
        base = wrk_post(bare_url + "/api/v1/reports", bodies, None, seconds, connections)
    finally:
        bare.terminate()
        bare.wait(10)

    server = ServerProcess(data, access_log="false", log_json="false", rate_per_token=0, rate_per_ip=0).start()
    screens = None
    try:
        token = Api(server.url).token("dispatcher")
        stats = data / "screens.json"
        screens = subprocess.Popen(
            [sys.executable, "-m", "bench.screens", server.ws_url, token, ",".join(scopes), "--stats", str(stats)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert screens.stdout is not None and screens.stdout.readline().strip() == "ready"
        wrk_post(server.url + "/api/v1/reports", bodies, token, 1.0, connections)  # warm-up
        before = _count(data)
        eng = wrk_post(server.url + "/api/v1/reports", bodies, token, seconds, connections)
        committed = _count(data) - before
    finally:
        if screens is not None:
            screens.terminate()
            screens.wait(20)
        server.stop()
    received = json.loads(stats.read_text())["received"] if stats.exists() else 0
    answered = eng.requests - eng.non_2xx
    ratio_target = 0.5
    rate = Figure(
        "ingest: reports/s (HTTP, durable, 100 screens)",
        eng.rate,
        "req/s",
        "bare FastAPI endpoint",
        base.rate,
        "≥ 0.50× baseline",
        eng.rate >= ratio_target * base.rate,
        f"{answered} answered 201, {committed} committed, {eng.non_2xx} non-2xx; screens received {received} events",
    )
    p50 = Figure("ingest: latency p50", eng.p50_ms, "ms", "bare p50", base.p50_ms)
    p99 = Figure("ingest: latency p99", eng.p99_ms, "ms", "bare p99", base.p99_ms)
    return [rate, p50, p99]


def _count(data: Path) -> int:
    with sqlite3.connect(data / "griddispatch.sqlite3") as con:
        return int(con.execute("select count(*) from incident").fetchone()[0])


if __name__ == "__main__":
    for f in run(quick="--quick" in sys.argv):
        print(f.as_dict())
