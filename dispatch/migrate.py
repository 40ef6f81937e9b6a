"""Schema migrations (Alembic, folder `migrations/`), run by `griddispatch init` and at every start.

Several processes may start together against one PostgreSQL: the upgrade runs in one transaction that first
takes an advisory lock, so one process migrates and the others then find the schema at head (PostgreSQL DDL is
transactional). On SQLite the transaction begins with BEGIN IMMEDIATE, which serializes the same way.

A database made before migrations existed (tables from `create_all`, no `alembic_version`) is stamped at the
first revision, which is exactly what `create_all` made, and then upgraded.

    python -m dispatch.migrate revision -m "what changed"   # autogenerate a revision from the models
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect

import migrations
from dispatch.db import Database

MIGRATIONS = Path(migrations.__file__).resolve().parent
FIRST_REVISION = "0001"


def alembic_config(db: Database | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if db is not None:
        cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(db: Database, revision: str = "head") -> None:
    cfg = alembic_config(db)
    with db.engine.execution_options(write_transaction=True).connect() as conn, conn.begin():
        db_lock(db, conn)
        tables = set(inspect(conn).get_table_names())
        if "incident" in tables and "alembic_version" not in tables:
            _run(cfg, conn, lambda: command.stamp(cfg, FIRST_REVISION))
        _run(cfg, conn, lambda: command.upgrade(cfg, revision))


def downgrade(db: Database, revision: str) -> None:
    cfg = alembic_config(db)
    with db.engine.execution_options(write_transaction=True).connect() as conn, conn.begin():
        db_lock(db, conn)
        _run(cfg, conn, lambda: command.downgrade(cfg, revision))


def current_revision(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def db_lock(db: Database, conn: Connection) -> None:
    if db.is_postgresql:
        from sqlalchemy import text

        from dispatch.db import lock_key

        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key("migrate")})


def _run(cfg: Config, conn: Connection, action) -> None:  # type: ignore[no-untyped-def]
    cfg.attributes["connection"] = conn
    try:
        action()
    finally:
        cfg.attributes.pop("connection", None)


def new_revision(message: str) -> Path:
    """Autogenerate the next numbered revision: compare the models with a scratch SQLite database at head."""
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    rev_id = f"{int(head or '0') + 1:04d}"
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/scratch.sqlite3")
        upgrade(db)
        cfg = alembic_config(db)
        with db.engine.connect() as conn:
            _run(cfg, conn, lambda: command.revision(cfg, message, autogenerate=True, rev_id=rev_id))
            conn.commit()
        db.dispose()
    path = next(MIGRATIONS.joinpath("versions").glob(f"{rev_id}_*.py"))
    _tidy(path)
    return path


def _tidy(path: Path) -> None:
    """Generated code follows the project's style, so `ruff check .` stays clean."""
    path.write_text("\n".join(line.rstrip() for line in path.read_text().splitlines()) + "\n")
    ruff = Path(sys.executable).parent / "ruff"
    if ruff.exists():
        subprocess.run([str(ruff), "check", "--fix", "--quiet", str(path)], check=False)
        subprocess.run([str(ruff), "format", "--quiet", str(path)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m dispatch.migrate")
    sub = parser.add_subparsers(dest="cmd", required=True)
    rev = sub.add_parser("revision", help="autogenerate a new revision from the models")
    rev.add_argument("-m", "--message", required=True)
    up = sub.add_parser("upgrade", help="upgrade GRIDDISPATCH_DATABASE_URL (default: the SQLite file)")
    up.add_argument("revision", nargs="?", default="head")
    args = parser.parse_args()
    if args.cmd == "revision":
        print(f"wrote {new_revision(args.message)}")
    else:
        from dispatch.settings import Settings

        db = Database(Settings().resolved_database_url)
        upgrade(db, args.revision)
        print(f"{db.url}: at {current_revision(db)}")
        db.dispose()


if __name__ == "__main__":
    main()
