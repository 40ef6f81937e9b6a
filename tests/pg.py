"""Test helper: the machine's PostgreSQL server, where tests create and drop their own databases."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

PREFIX = "gdtest"


@dataclass(frozen=True)
class Server:
    base_url: str  # SQLAlchemy URL of the maintenance database, e.g. postgresql+psycopg://postgres@host/postgres

    @classmethod
    def from_env(cls) -> Server:
        return cls(
            os.environ.get(
                "GRIDDISPATCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
            )
        )

    def url(self, database: str) -> str:
        return self.base_url.rsplit("/", 1)[0] + "/" + database

    def _conninfo(self) -> str:
        return re.sub(r"^postgresql(\+\w+)?://", "postgresql://", self.base_url)

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(self._conninfo(), autocommit=True, connect_timeout=3)

    def unreachable(self) -> str | None:
        try:
            with self._admin() as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return str(exc).strip() or type(exc).__name__
        return None

    @staticmethod
    def name(suffix: str) -> str:
        """Databases are named after the test process, so concurrent test runs never collide."""
        return f"{PREFIX}_{os.getpid()}_{suffix}"

    def create(self, name: str, template: str | None = None) -> str:
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            if template:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
            else:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def drop_stale(self) -> None:
        """Drop databases left behind by test runs that were killed (their process is gone)."""
        with self._admin() as conn:
            names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'gdtest\\_%'")]
        for name in names:
            parts = name.split("_")
            if len(parts) >= 3 and parts[1].isdigit() and not _alive(int(parts[1])):
                self.drop(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
