"""Alembic environment. `dispatch.migrate` passes an open connection (inside a locked transaction); the
alembic command line, if used directly, connects to GRIDDISPATCH_DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from dispatch.db import Database  # imports the models: SQLModel.metadata knows every table

config = context.config
target_metadata = SQLModel.metadata


def run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead, on SQLite only.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
elif context.is_offline_mode():
    raise SystemExit("offline (SQL script) mode is not supported; run `griddispatch init`")
else:
    from dispatch.settings import Settings

    db = Database(Settings().resolved_database_url)
    with db.engine.begin() as conn:
        run(conn)
    db.dispose()
