"""Helpers for the scale-out and crash tests: servers on either backend, demo points, outbox checks."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dispatch import models as m
from dispatch.bootstrap import load_active_tree
from dispatch.db import Database
from tests.server import ServerProcess

SPEED = 600  # a 30-minute acknowledgement limit passes in 3 real seconds
SERVER_SETTINGS: dict[str, Any] = {
    "clock_speed": SPEED,
    "timer_sweep_seconds": 0.5,
    "ws_heartbeat_seconds": 2,
}


def prepare(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, str]:
    """A demo database for server processes: (data_dir, database_url)."""
    if backend == "postgresql":
        return tmp_path, str(request.getfixturevalue("pg_database"))
    template: Path = request.getfixturevalue("demo_template")
    shutil.copy(template, tmp_path / "griddispatch.sqlite3")
    return tmp_path, f"sqlite:///{tmp_path / 'griddispatch.sqlite3'}"


def servers(data_dir: Path, url: str, count: int, **extra: Any) -> list[ServerProcess]:
    return [
        ServerProcess(data_dir, name=f"server{i}", database_url=url, **{**SERVER_SETTINGS, **extra})
        for i in range(count)
    ]


def start_all(procs: list[ServerProcess]) -> None:
    for p in procs:
        p.launch()
    for p in procs:
        p.wait_ready()


def grid_points(url: str, count: int) -> list[dict[str, Any]]:
    """Report bodies inside the grid workers' grids (so their ack deadlines start at the grid tier)."""
    db = Database(url)
    try:
        tree = load_active_tree(db)
        with db.read() as s:
            grids = [
                u.unit_code for u in s.execute(select(m.User).where(m.User.role == "grid_worker")).scalars()
            ]
    finally:
        db.dispose()
    out = []
    for i in range(count):
        p = tree.units[grids[i % len(grids)]].geometry.representative_point()
        out.append(
            {
                "lon": p.x,
                "lat": p.y,
                "category": "sanitation",
                "description": f"楼道垃圾 #{i}",
                "reporter": {"name": "王五", "phone": "13812341234"},
            }
        )
    return out


def applied_in_logs(procs: list[ServerProcess]) -> dict[str, int]:
    """How many deadlines each process applied (from its log), to show the work was shared."""
    pattern = re.compile(r"deadline \d+ applied")
    return {p.name: len(pattern.findall(p.log.read_text(errors="replace"))) for p in procs}
