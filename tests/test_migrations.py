"""Migrations on both backends: from empty, from every earlier revision, and the models match the result.

If `test_models_match_the_migrations` fails, someone changed dispatch/models.py without a revision: run
`.venv/bin/python -m dispatch.migrate revision -m "what changed"` and commit the file it writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from dispatch.db import Database
from dispatch.migrate import (
    FIRST_REVISION,
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from tests import pg


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path}/empty.sqlite3")
        yield db
        db.dispose()
        return
    server: pg.Server = request.getfixturevalue("pg_server")
    name = server.create(server.name("migr"))
    db = Database(server.url(name))
    yield db
    db.dispose()
    server.drop(name)


def differences(db: Database) -> list[object]:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, SQLModel.metadata))


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_upgrade_from_empty_reaches_head(empty_db: Database) -> None:
    upgrade(empty_db)
    assert current_revision(empty_db) == head_revision()
    tables = set(inspect(empty_db.engine).get_table_names())
    assert {"incident", "event", "deadline", "counter", "idempotency", "escalation_log"} <= tables


def test_models_match_the_migrations(empty_db: Database) -> None:
    """The schema the migrations build is the one the models describe (else: add a revision)."""
    upgrade(empty_db)
    diff = differences(empty_db)
    assert diff == [], (
        "dispatch/models.py and migrations/ differ; add a revision with "
        '`.venv/bin/python -m dispatch.migrate revision -m "…"`: ' + repr(diff)
    )


@pytest.mark.parametrize("start", ["base", *revisions()[:-1]])
def test_upgrade_from_each_earlier_revision(empty_db: Database, start: str) -> None:
    """A database at any earlier revision (or empty: base) upgrades to head and keeps its rows."""
    if start != "base":
        upgrade(empty_db, start)
        with empty_db.write() as s:
            s.execute(text("INSERT INTO meta (key, value) VALUES ('kept', 'yes')"))
    upgrade(empty_db)
    assert current_revision(empty_db) == head_revision()
    assert differences(empty_db) == []
    if start != "base":
        with empty_db.read() as s:
            assert s.execute(text("SELECT value FROM meta WHERE key = 'kept'")).scalar_one() == "yes"


def test_downgrade_to_the_first_revision_and_back(empty_db: Database) -> None:
    upgrade(empty_db)
    downgrade(empty_db, FIRST_REVISION)
    assert current_revision(empty_db) == FIRST_REVISION
    upgrade(empty_db)
    assert differences(empty_db) == []


def test_a_database_made_before_migrations_is_stamped_and_upgraded(empty_db: Database) -> None:
    """Databases created with create_all (before Alembic) carry on: stamped at the first revision."""
    upgrade(empty_db, FIRST_REVISION)
    with empty_db.write() as s:
        s.execute(text("DROP TABLE alembic_version"))
    upgrade(empty_db)
    assert current_revision(empty_db) == head_revision()


def test_upgrade_is_idempotent_and_concurrent_starts_are_safe(empty_db: Database) -> None:
    """Several processes start at once against a new database: one migrates, the others wait and see head."""
    import threading

    errors: list[BaseException] = []

    def start() -> None:
        db = Database(empty_db.url)
        try:
            upgrade(db)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert current_revision(empty_db) == head_revision()


def test_processes_starting_together_on_an_empty_database_load_the_demo_once(
    empty_db: Database, tmp_path: Path
) -> None:
    """Every start runs migrations and the first-start demo load: racing starts must all succeed, once."""
    import threading

    from sqlalchemy import func, select

    from dispatch import models as m
    from dispatch.bootstrap import build
    from dispatch.clock import FakeClock
    from dispatch.settings import Settings

    errors: list[BaseException] = []
    secrets: list[str] = []

    def start(i: int) -> None:
        try:
            c = build(Settings(data_dir=tmp_path / str(i), database_url=empty_db.url), clock=FakeClock())
            secrets.append(c.jwt_secret)
            c.db.dispose()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(secrets)) == 1  # tokens from one process are valid on the others
    with empty_db.read() as s:
        assert s.execute(select(func.count()).select_from(m.GridGeneration)).scalar_one() == 1
