"""Shared fixtures. The demo database is generated once per session and copied for each test."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo database built once; tests get copies."""
    directory = tmp_path_factory.mktemp("template")
    container = build(Settings(data_dir=directory), clock=FakeClock())
    container.db.dispose()
    for suffix in ("-wal", "-shm"):
        Path(str(directory / "griddispatch.sqlite3") + suffix).unlink(missing_ok=True)
    return directory / "griddispatch.sqlite3"


@pytest.fixture
def data_dir(tmp_path: Path, demo_template: Path) -> Path:
    shutil.copy(demo_template, tmp_path / "griddispatch.sqlite3")
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
