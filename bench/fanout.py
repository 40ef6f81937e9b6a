"""Fan-out: 1,000 county-wide screens; from an action's commit to the LAST screen receiving its event.

The service stamps the event envelope's `at` in the committing transaction; each screen notes `time.time()`
on receipt (bench/screens.py), and per seq the latest screen counts. p50/p99 over the actions.

Baseline in the same run: a bare Starlette/uvicorn WebSocket server (bench/bare_ws.py) broadcasting a fixed
~300-byte event with the same envelope to the same 1,000 clients, triggered the same way (one HTTP POST per
event, spaced out). Target: p99 ≤ 1.5× the baseline's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import Figure, fresh_data_dir, percentile
from tests.server import Api, ServerProcess, free_port

TARGET = 1.5


def _screens(ws_url: str, token: str, count: int, stats: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.screens",
            ws_url,
            token,
            "-",
            "--count",
            str(count),
            "--stats",
            str(stats),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"screens did not connect (got {line!r})")
    return proc


def _collect(proc: subprocess.Popen[str], stats: Path, screens: int) -> tuple[list[float], int]:
    """Lateness (s) of the last screen per seq, and how many seqs reached fewer than every screen."""
    proc.terminate()
    proc.wait(30)
    data = json.loads(stats.read_text())
    partial = sum(1 for n in data["deliveries"].values() if n < screens)
    return list(data["last"].values()), partial


def _drive(post: callable, actions: int, gap: float) -> None:  # type: ignore[valid-type]
    for _ in range(3):  # warm-up, not measured (seqs before the measured ones are dropped by the caller)
        post()
        time.sleep(gap)
    for _ in range(actions):
        post()
        time.sleep(gap)
    time.sleep(max(1.0, 3 * gap))


def _bare(screens: int, actions: int, gap: float, work: Path) -> tuple[list[float], int]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench.bare_ws:create_app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--ws-per-message-deflate",
            "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.post(url + "/broadcast", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        stats = work / "bare.json"
        proc = _screens(f"ws://127.0.0.1:{port}/ws/events", "-", screens, stats)
        with httpx.Client(base_url=url, timeout=30) as http:
            first = http.post("/broadcast").json()["seq"] + 1
            _drive(lambda: http.post("/broadcast").raise_for_status(), actions, gap)
        late, partial = _collect(proc, stats, screens)
        data = json.loads(stats.read_text())["last"]
        return [v for k, v in data.items() if int(k) >= first + 3], partial
    finally:
        server.terminate()
        server.wait(10)


def _ours(screens: int, actions: int, gap: float) -> tuple[list[float], int, int]:
    data = fresh_data_dir("fanout")
    server = ServerProcess(data, access_log="false", log_json="false").start()
    try:
        api = Api(server.url)
        token = api.token("dispatcher")
        body = {
            "lon": 115.9057,
            "lat": 28.7639,
            "category": "sanitation",
            "description": "fan-out benchmark",
            "reporter": {"name": "王五", "phone": "13812341234"},
        }
        r = api.report("dispatcher", body)
        r.raise_for_status()
        incident = r.json()["id"]
        stats = data / "screens.json"
        proc = _screens(server.ws_url, token, screens, stats)
        seqs: list[int] = []
        sizes: list[int] = []

        def comment() -> None:
            resp = api.act("dispatcher", incident, "comment", note="调度中心：请尽快处置")
            resp.raise_for_status()

        # The seq of each measured action is read back from the outbox after the run.
        before = _max_seq(data)
        _drive(comment, actions, gap)
        late_by_seq = _collect_map(proc, stats)
        partial = sum(1 for n in json.loads(stats.read_text())["deliveries"].values() if n < screens)
        seqs = sorted(s for s in late_by_seq if s > before + 3)
        sizes = _sizes(data, seqs[:1])
        return [late_by_seq[s] for s in seqs], partial, sizes[0] if sizes else 0
    finally:
        server.stop()


def _collect_map(proc: subprocess.Popen[str], stats: Path) -> dict[int, float]:
    proc.terminate()
    proc.wait(30)
    return {int(k): v for k, v in json.loads(stats.read_text())["last"].items()}


def _max_seq(data: Path) -> int:
    import sqlite3

    with sqlite3.connect(data / "griddispatch.sqlite3") as con:
        return int(con.execute("select coalesce(max(seq), 0) from event").fetchone()[0])


def _sizes(data: Path, seqs: list[int]) -> list[int]:
    from api.hub import encode
    from dispatch.db import Database
    from dispatch.queries import events_after

    if not seqs:
        return []
    db = Database(f"sqlite:///{data / 'griddispatch.sqlite3'}")
    try:
        return [len(encode(e)) for e in events_after(db, seqs[0] - 1, 1)]
    finally:
        db.dispose()


def run(quick: bool = False) -> list[Figure]:
    screens, actions, gap = (200, 10, 0.2) if quick else (1000, 30, 0.4)
    work = Path(tempfile.mkdtemp(prefix="gd-bench-fanout-"))
    base, base_partial = _bare(screens, actions, gap, work)
    ours, partial, size = _ours(screens, actions, gap)
    p50, p99 = percentile(ours, 50) * 1000, percentile(ours, 99) * 1000
    b50, b99 = percentile(base, 50) * 1000, percentile(base, 99) * 1000
    note = (
        f"{screens} screens, {len(ours)} actions (ours, {size}-byte events) / {len(base)} broadcasts (bare); "
        f"events that missed a screen: ours {partial}, bare {base_partial}"
    )
    return [
        Figure(
            f"fanout: last screen p50 ({screens} screens)", p50, "ms", "bare Starlette p50", b50, note=note
        ),
        Figure(
            f"fanout: last screen p99 ({screens} screens)",
            p99,
            "ms",
            "bare Starlette p99",
            b99,
            f"≤ {TARGET}× baseline",
            p99 <= TARGET * b99,
        ),
    ]


if __name__ == "__main__":
    for f in run(quick="--quick" in sys.argv):
        print(f.as_dict())
