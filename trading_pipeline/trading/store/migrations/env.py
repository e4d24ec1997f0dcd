"""Alembic's environment for the ops store: runs the revisions on the connection the store
opened (``config.attributes["connection"]``), inside that connection's transaction.

Run through :func:`trading_pipeline.trading.store.migrations.upgrade`, not the ``alembic``
command line: the store's connection carries what the revisions rely on (SQLite: ``BEGIN
IMMEDIATE`` issued by the engine, WAL; Postgres: the advisory lock taken before).
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the ops store's migrations run on an open connection: use OpsStore(url) (it migrates on open) "
        "or trading_pipeline.trading.store.migrations.upgrade(conn)"
    )

# SQLite DDL is transactional too as long as the driver does not commit on its own, and the
# store's SQLite engine issues BEGIN itself (isolation_level None): declare it, so Alembic
# keeps every revision in the one transaction instead of committing per revision. The caller's
# transaction is already open, so begin_transaction() below adds none of its own.
context.configure(connection=connection, transactional_ddl=True, target_metadata=None)

with context.begin_transaction():
    context.run_migrations()
