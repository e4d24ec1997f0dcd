"""The ops store's schema history: Alembic revisions (``versions/``), applied on open.

:func:`upgrade` runs inside the caller's transaction (``StoreBase.migrate`` opens one: ``BEGIN
IMMEDIATE`` on SQLite, plus an advisory lock on Postgres), so several processes opening a new
store at once apply each revision once, and a failed revision leaves nothing half done (DDL is
transactional on both databases). No ``alembic.ini`` is needed: :func:`config` builds the
configuration in code and hands the open connection to ``env.py``.

Stores made before Alembic recorded their hand-rolled migrations in ``schema_version`` (rows
1..4) and have no ``alembic_version`` table. :func:`upgrade` stamps such a store with the
revision that does what its highest version did (:data:`LEGACY_VERSIONS`), then upgrades it.
The ``schema_version`` table is left as it was and no longer read or written.

Adding a revision: change the table in ``schema.py`` and write the next file in ``versions/``
by hand (or ``alembic.command.revision(config(), "what changes", rev_id="0005_...")``). Spell
its DDL out with ``op.create_table`` / ``op.add_column`` / ``op.execute`` and plain SQLAlchemy
types: a revision never imports the live tables, so it does the same thing forever.
``tests/trading/test_ops_store.py`` checks that the revisions and ``schema.py`` agree.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

HERE = Path(__file__).resolve().parent

# Postgres: one transaction-scoped advisory lock serialises migrating processes (SQLite's
# BEGIN IMMEDIATE already does). The key is the one the hand-rolled migrations used.
ADVISORY_LOCK = 727274001

# schema_version (the hand-rolled migrations before Alembic) -> the revision with the same effect
LEGACY_VERSIONS: dict[int, str] = {
    1: "0001_core_tables",
    2: "0002_paper_broker",
    3: "0003_equity_marks",
    4: "0004_denied_status",
}


def config(connection: Connection | None = None) -> Config:
    """The Alembic configuration, in code; ``env.py`` runs on ``connection``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@cache
def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The newest revision id."""
    head = script().get_current_head()
    assert head is not None, "no revisions"
    return head


def revisions() -> list[str]:
    """Every revision id, oldest first."""
    return [r.revision for r in reversed(list(script().walk_revisions()))]


def version_of(revision: str | None) -> int:
    """How many revisions lead up to ``revision`` (0 for an empty store): 4 for ``0004_...``,
    the same number the hand-rolled ``schema_version`` gave."""
    if revision is None:
        return 0
    try:
        return revisions().index(revision) + 1
    except ValueError:
        raise ValueError(f"ops store at unknown schema revision {revision!r} (made by a newer release?)") from None


def current(conn: Connection) -> str | None:
    """The revision the store at ``conn`` is at (None: no ``alembic_version`` row)."""
    return MigrationContext.configure(conn).get_current_revision()


def legacy_revision(conn: Connection) -> str | None:
    """For a store the hand-rolled migrations made (``schema_version``, no ``alembic_version``):
    the revision matching its highest version. None for any other store."""
    inspector = sa.inspect(conn)
    if inspector.has_table("alembic_version") or not inspector.has_table("schema_version"):
        return None
    top = conn.execute(sa.text("SELECT max(version) FROM schema_version")).scalar()
    if top is None:
        return None
    if top not in LEGACY_VERSIONS:
        raise RuntimeError(f"ops store at schema_version {top}, which no release made; refusing to migrate it")
    return LEGACY_VERSIONS[top]


def upgrade(conn: Connection, target: str = "head") -> str | None:
    """Bring the store at ``conn`` to ``target`` inside ``conn``'s transaction (one is begun if
    none is open), stamping a pre-Alembic store first. Returns the revision it is at."""
    if not conn.in_transaction():
        with conn.begin():
            return upgrade(conn, target)
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
    if target == "head" and current(conn) == head():
        return head()  # the usual open: nothing to do, and no Alembic machinery run
    cfg = config(conn)
    legacy = legacy_revision(conn)
    if legacy is not None:
        command.stamp(cfg, legacy)
    command.upgrade(cfg, target)
    return current(conn)


def downgrade(conn: Connection, target: str) -> str | None:
    """Take the store at ``conn`` back to ``target`` (a revision id or ``base``), in one transaction."""
    if not conn.in_transaction():
        with conn.begin():
            return downgrade(conn, target)
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
    command.downgrade(config(conn), target)
    return current(conn)
