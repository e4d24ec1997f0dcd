"""The operational store: orders, their history, fills, positions, daily equity marks, risk
events, cursors, the kill switch and API keys.

Written by two kinds of process at once (the API for manual orders, Dagster runs for signal
orders), so it lives in a database made for concurrent writers, not in the warehouse.
SQLAlchemy Core keeps one code path for SQLite (the default, a file under TRADING_HOME) and a
Postgres URL. On SQLite every write transaction starts with ``BEGIN IMMEDIATE`` (the write
lock is taken up front, so two writers queue on ``busy_timeout`` instead of failing with a
lock-upgrade deadlock) and the file runs in WAL mode so readers never block writers.

Money and quantities are stored as decimal strings: exact on both backends.

The schema is versioned by Alembic: the revisions in ``migrations/versions/`` run on open,
in the opening transaction (see ``migrations``), and a store made before Alembic (its
hand-rolled ``schema_version`` table) is stamped with the matching revision and upgraded in place.

One module per concern: ``schema`` (tables, SQL helpers), ``migrations`` (Alembic revisions
and running them), ``base`` (engines, transactions, migrating on open), ``orders`` (orders and
events), ``accounts`` (fills, positions, equity marks), ``risk`` (risk events, kill switch),
``risk_alerts`` (risk monitoring alerts, the webhook outbox), ``keys`` (API keys, cursors).
"""

from trading_pipeline.trading.store.accounts import AccountRecords, EquityMark
from trading_pipeline.trading.store.keys import KeyRecords
from trading_pipeline.trading.store.orders import OrderRecords
from trading_pipeline.trading.store.risk import KillSwitch, RiskEvent, RiskRecords
from trading_pipeline.trading.store.risk_alerts import RiskAlert, RiskAlertRecords
from trading_pipeline.trading.store.schema import insert_if_missing, metadata, upsert


class OpsStore(OrderRecords, AccountRecords, RiskRecords, RiskAlertRecords, KeyRecords):
    """The ops store at ``url`` (any SQLAlchemy URL); the schema is migrated on open."""


__all__ = ["EquityMark", "KillSwitch", "OpsStore", "RiskAlert", "RiskEvent", "insert_if_missing", "metadata", "upsert"]
