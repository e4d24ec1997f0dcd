"""Opening the ops store: engines, transactions, migrations on open."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from trading_pipeline.trading.store import migrations
from trading_pipeline.trading.store.schema import _sqlite_engine, metadata


class StoreBase:
    """Connections, transactions and the schema of the ops store at ``url`` (any SQLAlchemy URL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _sqlite_engine(url)
            self._read_engine = self.engine.execution_options(sqlite_begin="DEFERRED")
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
            self._read_engine = self.engine
        self.migrate()

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        """The store ``TRADING_OPS_URL`` names (default: SQLite in TRADING_HOME, created):
        the one way every process opens it."""
        if settings.ops_url is None:
            settings.home.mkdir(parents=True, exist_ok=True)
        return cls(settings.ops_store_url)

    def close(self) -> None:
        self.engine.dispose()

    # ---- transactions and schema -----------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction (holds SQLite's write lock for its duration: keep it short)."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self._read_engine.begin() as conn:
            yield conn

    def _lock_rows(self, stmt: sa.Select) -> sa.Select:
        return stmt if self.is_sqlite else stmt.with_for_update()

    def migrate(self) -> int:
        """Apply pending Alembic revisions, once, even with several processes starting.

        One write transaction (SQLite: ``BEGIN IMMEDIATE``; Postgres: an advisory lock taken
        first) holds the check, the stamping of a pre-Alembic store and every revision, so a
        second process waits and then finds the store at head. Returns :meth:`schema_version`.
        """
        with self.transaction() as conn:
            migrations.upgrade(conn)
        return self.schema_version()

    def schema_revision(self) -> str | None:
        """The Alembic revision the store is at, e.g. ``0004_denied_status``."""
        with self.reading() as conn:
            return migrations.current(conn)

    def schema_version(self) -> int:
        """How many schema revisions the store has (4 at ``0004_denied_status``): the number
        the hand-rolled ``schema_version`` table gave before Alembic, and the health check shows."""
        return migrations.version_of(self.schema_revision())

    MIRRORED_TABLES = ("orders", "order_events", "fills", "positions", "accounts", "risk_events", "equity_marks")

    def rows(self, table: str) -> list[dict[str, Any]]:
        """All rows of one ops table (decimals as Decimal): for mirroring into the warehouse."""
        if table not in self.MIRRORED_TABLES:
            raise ValueError(f"{table!r} is not mirrored; one of {', '.join(self.MIRRORED_TABLES)}")
        t = metadata.tables[table]
        with self.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(t))]

