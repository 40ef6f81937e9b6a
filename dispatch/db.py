"""Database engine and transactions, for the embedded SQLite file and for PostgreSQL (scale-out).

SQLite (the embedded default) runs in WAL mode with synchronous=FULL: a 201 means the report is on disk. Write
transactions start with BEGIN IMMEDIATE so two writers never both read a case and then race to update it; on
PostgreSQL the service locks the case row with SELECT ... FOR UPDATE instead, and the `event_seq` counter row
(bumped in every transaction that writes events) keeps commit order equal to seq order.

On PostgreSQL a transaction that wrote events also sends NOTIFY on `EVENTS_CHANNEL`; PostgreSQL delivers it
only if and when the transaction commits, so every process's event hub wakes up for every commit. The notice
carries no data that matters: the outbox table is the truth.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session
from sqlmodel import SQLModel

from dispatch import models  # noqa: F401  (registers the tables)

EVENTS_CHANNEL = "griddispatch_events"
# Set by the service on a write session that bumped the event seq; read just before commit to NOTIFY.
LAST_SEQ_KEY = "griddispatch.last_seq"


def normalize_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3 (the driver we ship), not the legacy psycopg2."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


class Database:
    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.is_postgresql = self.url.startswith("postgresql")
        if self.is_sqlite:
            path = self.url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                self.url,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=8,
                max_overflow=8,
            )
            _configure_sqlite(self.engine)
        else:
            # pool_pre_ping: after a database failover or restart, stale pooled connections are replaced
            # instead of failing the next request.
            self.engine = create_engine(self.url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        self._writer = self.engine.execution_options(write_transaction=True)

    @property
    def libpq_url(self) -> str:
        """The URL for a raw psycopg connection (LISTEN, advisory claims): no SQLAlchemy driver suffix."""
        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    def create_all(self) -> None:
        """Tables straight from the models, without migrations (only for throwaway databases)."""
        SQLModel.metadata.create_all(self.engine)

    def migrate(self) -> None:
        """Bring the schema to the newest migration (safe to run from several processes at once)."""
        from dispatch.migrate import upgrade

        upgrade(self)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: commits on success, rolls back on any exception."""
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session
            last_seq = session.info.pop(LAST_SEQ_KEY, None)
            if last_seq is not None and self.is_postgresql:
                session.execute(
                    text("SELECT pg_notify(:channel, :seq)"),
                    {"channel": EVENTS_CHANNEL, "seq": str(last_seq)},
                )

    def serialize(self, session: Session, name: str) -> None:
        """Hold a named lock until this write transaction ends, so one-time setup (demo county, settings)
        runs once even when several processes start together. SQLite's BEGIN IMMEDIATE already serializes
        every writer."""
        if self.is_postgresql:
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})

    def dispose(self) -> None:
        self.engine.dispose()


def lock_key(name: str) -> int:
    """A stable 63-bit advisory-lock key for a name (stable across processes, unlike hash())."""
    return (zlib.crc32(b"griddispatch") << 31) ^ zlib.crc32(name.encode())


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("write_transaction", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
