"""Shared fixtures. The demo database is generated once per session and copied for each test.

Every test that uses `container` (or `data_dir`) runs twice: on the embedded SQLite file and on PostgreSQL.
Each PostgreSQL test gets a fresh database cloned from a migrated demo template (`CREATE DATABASE … TEMPLATE`)
and dropped afterwards. Without a reachable PostgreSQL those variants are skipped, except under CI=true,
where they fail: CI must never pass by silently testing one backend.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import shapely

from dispatch.bootstrap import Container, build
from dispatch.clock import FakeClock
from dispatch.domain import Actor, NewReport
from dispatch.queries import pending_deadlines
from dispatch.settings import Settings
from tests import pg

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo database built once; tests get copies."""
    directory = tmp_path_factory.mktemp("template")
    url = f"sqlite:///{directory / 'griddispatch.sqlite3'}"  # explicit: never a GRIDDISPATCH_DATABASE_URL
    container = build(Settings(data_dir=directory, database_url=url), clock=FakeClock())
    container.db.dispose()
    for suffix in ("-wal", "-shm"):
        Path(str(directory / "griddispatch.sqlite3") + suffix).unlink(missing_ok=True)
    return directory / "griddispatch.sqlite3"


@pytest.fixture(scope="session")
def pg_server() -> pg.Server:
    """The machine's PostgreSQL (GRIDDISPATCH_TEST_PG_URL, default postgres@127.0.0.1:5432)."""
    server = pg.Server.from_env()
    problem = server.unreachable()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"PostgreSQL is unreachable under CI=true ({problem}); .ci/run should have started it"
            )
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    server.drop_stale()
    return server


@pytest.fixture(scope="session")
def pg_template(pg_server: pg.Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated PostgreSQL database with the demo county, built once per session; tests get clones."""
    name = pg_server.create(pg_server.name("tmpl"))
    container = build(
        Settings(data_dir=tmp_path_factory.mktemp("pg-template"), database_url=pg_server.url(name)),
        clock=FakeClock(),
    )
    container.db.dispose()
    yield name
    pg_server.drop(name)


_clones = itertools.count()


@pytest.fixture
def pg_database(pg_server: pg.Server, pg_template: str) -> Iterator[str]:
    """A fresh demo database on PostgreSQL for one test; yields its URL."""
    name = pg_server.create(pg_server.name(f"t{next(_clones)}"), template=pg_template)
    yield pg_server.url(name)
    pg_server.drop(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def data_dir(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The test's data folder. On PostgreSQL, GRIDDISPATCH_DATABASE_URL points at a fresh clone, so every
    `Settings(data_dir=…)` a test builds (including a simulated restart) reaches the same database."""
    if backend == "postgresql":
        monkeypatch.setenv("GRIDDISPATCH_DATABASE_URL", request.getfixturevalue("pg_database"))
    else:
        monkeypatch.delenv("GRIDDISPATCH_DATABASE_URL", raising=False)
        shutil.copy(request.getfixturevalue("demo_template"), tmp_path / "griddispatch.sqlite3")
    return tmp_path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def container(data_dir: Path, clock: FakeClock) -> Iterator[Container]:
    c = build(Settings(data_dir=data_dir), clock=clock)
    yield c
    c.db.dispose()


class Demo:
    """Handy actors and points of the demo county (东湖区)."""

    def __init__(self, c: Container) -> None:
        from dispatch import models as m

        with c.db.read() as s:
            users = {u.username: u for u in s.query(m.User).all()}
        self.actors = {
            name: Actor(u.username, u.role, u.unit_code, u.department) for name, u in users.items()
        }
        self.tree = c.tree
        self.grid = users["grid"].unit_code
        self.grid2 = users["grid2"].unit_code

    def actor(self, name: str) -> Actor:
        return self.actors[name]

    def point_in(self, code: str) -> tuple[float, float]:
        p = self.tree.units[code].geometry.representative_point()
        return (p.x, p.y)

    def point_outside(self) -> tuple[float, float]:
        county = self.tree.units["360102"].geometry
        minx, miny, maxx, maxy = county.bounds
        p = shapely.Point(maxx + 0.05, maxy + 0.05)
        assert not county.intersects(p)
        return (p.x, p.y)

    def report(
        self,
        code: str | None = None,
        category: str = "sanitation",
        severity: str = "normal",
        source: str = "hotline",
    ) -> NewReport:
        lon, lat = self.point_in(code or self.grid) if code != "outside" else self.point_outside()
        return NewReport(
            lon,
            lat,
            category,
            severity,
            "楼道里堆满了垃圾",
            source,
            reporter_name="王五",
            reporter_phone="13812341234",
        )


@pytest.fixture
def demo(container: Container) -> Demo:
    return Demo(container)


def fire_due(container: Container) -> int:
    """Fire every deadline that is due on the container's clock, as the timer runner would."""
    count = 0
    for deadline_id, _due in pending_deadlines(container.db, container.clock.now()):
        count += container.service.fire_deadline(deadline_id)
    return count


def advance(container: Container, clock: FakeClock, **kw: float) -> int:
    clock.advance(timedelta(**kw))
    return fire_due(container)
