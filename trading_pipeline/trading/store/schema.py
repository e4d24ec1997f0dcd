"""The ops store's tables and the SQL helpers every part of the store uses.

Money and quantities are stored as decimal strings: exact on SQLite and Postgres.

These tables are what the code reads and writes; the database gets them from the Alembic
revisions in ``store/migrations/versions/``, applied on open (see ``store/migrations``). A
change to a table here needs a new revision doing the same change;
``tests/trading/test_ops_store.py`` compares a migrated store with these tables.

SQLite: the engine issues ``BEGIN`` itself (the driver's own transaction handling is off), so a
write transaction starts with ``BEGIN IMMEDIATE`` and a read one with ``BEGIN DEFERRED``.
"""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine


class DecimalText(sa.types.TypeDecorator):
    """Decimal stored as text: exact on SQLite (whose NUMERIC is a float) and Postgres."""

    impl = sa.String(64)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else str(Decimal(value))

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


metadata = sa.MetaData()

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("client_order_id", sa.String(64), primary_key=True),
    sa.Column("account", sa.String(64), nullable=False, index=True),
    sa.Column("strategy", sa.String(64), nullable=False),
    sa.Column("symbol", sa.String(32), nullable=False, index=True),
    sa.Column("side", sa.String(8), nullable=False),
    sa.Column("order_type", sa.String(16), nullable=False),
    sa.Column("quantity", DecimalText, nullable=False),
    sa.Column("limit_price", DecimalText),
    sa.Column("time_in_force", sa.String(8), nullable=False),
    sa.Column("status", sa.String(24), nullable=False, index=True),
    sa.Column("filled_quantity", DecimalText, nullable=False),
    sa.Column("avg_fill_price", DecimalText),
    sa.Column("broker", sa.String(32)),
    sa.Column("broker_order_id", sa.String(64)),
    sa.Column("signal_ts", sa.DateTime),
    sa.Column("reason", sa.Text),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime, nullable=False, index=True),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    # stop, stop_limit and trailing_stop orders (revision 0005)
    sa.Column("stop_price", DecimalText),
    sa.Column("trail_percent", DecimalText),
    sa.Column("trail_amount", DecimalText),
    # a bracket's exits (revision 0006): the entry they close and their one-cancels-other group
    sa.Column("parent_client_order_id", sa.String(64), index=True),
    sa.Column("oco_group", sa.String(64)),
    # the bar size of the signal a scan order came from (revision 0011): 1d or 1m..1h; NULL for a
    # manual order (and a scan order stored before 0011 whose bar size was not daily). An order
    # run advances only the working orders of its own bar size (trading_pipeline/defs/orders.py)
    sa.Column("timeframe", sa.String(8)),
)

order_events = sa.Table(
    "order_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_order_id", sa.String(64), nullable=False, index=True),
    sa.Column("ts", sa.DateTime, nullable=False),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("from_status", sa.String(24)),
    sa.Column("to_status", sa.String(24), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

fills = sa.Table(
    "fills",
    metadata,
    sa.Column("fill_id", sa.String(96), primary_key=True),
    sa.Column("client_order_id", sa.String(64), nullable=False, index=True),
    sa.Column("account", sa.String(64), nullable=False, index=True),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("side", sa.String(8), nullable=False),
    sa.Column("quantity", DecimalText, nullable=False),
    sa.Column("price", DecimalText, nullable=False),
    sa.Column("commission", DecimalText, nullable=False),
    sa.Column("realized_pnl", DecimalText, nullable=False),
    sa.Column("ts", sa.DateTime, nullable=False, index=True),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("starting_cash", DecimalText, nullable=False),
    sa.Column("cash", DecimalText, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

positions = sa.Table(
    "positions",
    metadata,
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("quantity", DecimalText, nullable=False),
    sa.Column("avg_price", DecimalText, nullable=False),
    sa.Column("realized_pnl", DecimalText, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

risk_events = sa.Table(
    "risk_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.DateTime, nullable=False, index=True),
    sa.Column("client_order_id", sa.String(64), index=True),
    sa.Column("account", sa.String(64)),
    sa.Column("symbol", sa.String(32)),
    sa.Column("side", sa.String(8)),
    sa.Column("quantity", DecimalText),
    sa.Column("rule", sa.String(48), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("value", DecimalText),
    sa.Column("limit_value", DecimalText),
)

alert_cursors = sa.Table(
    "alert_cursors",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("cursor", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

kill_switch = sa.Table(
    "kill_switch",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("updated_by", sa.String(64)),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("revoked_at", sa.DateTime),
    # read < trade < admin (trading_api/keys.py); trade is what keys could do before 0009
    sa.Column("scope", sa.String(16), nullable=False, server_default="trade"),
)

# The paper broker's own book: it is "the broker", separate from our view of orders.
paper_orders = sa.Table(
    "paper_orders",
    metadata,
    sa.Column("client_order_id", sa.String(64), primary_key=True),
    sa.Column("broker_order_id", sa.String(64), nullable=False, unique=True),
    sa.Column("account", sa.String(64), nullable=False, index=True),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("side", sa.String(8), nullable=False),
    sa.Column("order_type", sa.String(16), nullable=False),
    sa.Column("quantity", DecimalText, nullable=False),
    sa.Column("limit_price", DecimalText),
    sa.Column("time_in_force", sa.String(8), nullable=False),
    sa.Column("status", sa.String(24), nullable=False, index=True),
    sa.Column("filled_quantity", DecimalText, nullable=False),
    sa.Column("avg_fill_price", DecimalText),
    sa.Column("reason", sa.Text),
    sa.Column("submitted_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    # stop, stop_limit and trailing_stop orders (revision 0005)
    sa.Column("stop_price", DecimalText),
    sa.Column("trail_percent", DecimalText),
    sa.Column("trail_amount", DecimalText),
    # a trailing stop's best price so far (buy: lowest low, sell: highest high) and the stop it
    # implies; a stop_limit's trigger time once triggered. Kept as of the last process_bars.
    sa.Column("trail_mark", DecimalText),
    sa.Column("current_stop", DecimalText),
    sa.Column("triggered_at", sa.DateTime),
    # a bracket's exits (revision 0006): active once the parent has filled; one-cancels-other
    sa.Column("parent_client_order_id", sa.String(64), index=True),
    sa.Column("oco_group", sa.String(64)),
)

paper_fills = sa.Table(
    "paper_fills",
    metadata,
    sa.Column("fill_id", sa.String(96), primary_key=True),
    sa.Column("client_order_id", sa.String(64), nullable=False, index=True),
    sa.Column("account", sa.String(64), nullable=False, index=True),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("side", sa.String(8), nullable=False),
    sa.Column("quantity", DecimalText, nullable=False),
    sa.Column("price", DecimalText, nullable=False),
    sa.Column("commission", DecimalText, nullable=False),
    sa.Column("bar_ts", sa.DateTime, nullable=False),
    sa.Column("ts", sa.DateTime, nullable=False),
)

# One row per account and session (UTC date): the first and the latest equity observed that
# day. The latest mark of an earlier day is the start-of-day equity the daily loss limit
# measures from (see trading_pipeline/trading/risk.py); the orders asset writes it at each session's
# close, and every risk check updates it.
equity_marks = sa.Table(
    "equity_marks",
    metadata,
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("session_date", sa.Date, primary_key=True),
    sa.Column("first_ts", sa.DateTime, nullable=False),
    sa.Column("first_equity", DecimalText, nullable=False),
    sa.Column("first_unrealized_pnl", DecimalText, nullable=False),
    sa.Column("last_ts", sa.DateTime, nullable=False),
    sa.Column("last_equity", DecimalText, nullable=False),
)

paper_accounts = sa.Table(
    "paper_accounts",
    metadata,
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("starting_cash", DecimalText, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)


def _enable_wal(cur: Any, timeout: float = 60.0) -> None:
    """Switch the file to WAL (persistent, so usually already done).

    Changing the journal mode needs an exclusive lock and SQLite answers "database is
    locked" at once instead of waiting on busy_timeout, so two processes opening a new
    file together must retry here.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _insert(conn: Connection, table: sa.Table) -> Any:
    """An INSERT with ``ON CONFLICT`` support (both dialects the store runs on have it).

    Check-then-insert is safe on SQLite (one writer at a time) but not on Postgres, where a
    row that does not exist yet cannot be locked: two transactions both see no row and both
    insert. ``ON CONFLICT`` makes the second one wait for the first and then update/skip.
    """
    dialect = {"postgresql": postgresql, "sqlite": sqlite}.get(conn.dialect.name)
    if dialect is None:
        raise NotImplementedError(f"the ops store runs on SQLite or Postgres, not {conn.dialect.name}")
    return dialect.insert(table)


def upsert(conn: Connection, table: sa.Table, key: dict[str, Any], values: dict[str, Any]) -> None:
    """Insert the row at primary key ``key`` or update it with ``values``, atomically."""
    stmt = _insert(conn, table).values(**key, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=list(key), set_=values))


def insert_if_missing(conn: Connection, table: sa.Table, key: dict[str, Any], values: dict[str, Any]) -> bool:
    """Insert the row at primary key ``key`` unless it exists; True if this call inserted it."""
    stmt = _insert(conn, table).values(**key, **values)
    return bool(conn.execute(stmt.on_conflict_do_nothing(index_elements=list(key))).rowcount)


def _sqlite_engine(url: str) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see module docstring)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=60000")
        if ":memory:" not in url and url.rstrip("/") not in ("sqlite:", "sqlite:/"):
            _enable_wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine




# Risk monitoring alerts (revision 0007; trading_pipeline/trading/risk_monitor.py): one row per
# account, condition (kind), level and session, so a condition alerts once per session (and once
# more if a warning becomes a breach). Also the webhook's outbox: delivered_at is set once the
# receiver accepted it; attempts, last_attempt_at and last_error drive and explain the retries.
risk_alerts = sa.Table(
    "risk_alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("value", DecimalText),
    sa.Column("limit_value", DecimalText),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("session_date", sa.Date, nullable=False),
    sa.Column("ts", sa.DateTime, nullable=False),
    sa.Column("delivered_at", sa.DateTime),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_attempt_at", sa.DateTime),
    sa.Column("last_error", sa.Text),
    sa.UniqueConstraint("account", "kind", "level", "session_date", name="uq_risk_alerts_condition"),
)


# Corporate actions applied to an account (revision 0008; trading_pipeline/trading/corporate_actions.py):
# one row per account and action (symbol:ex_date:kind), so applying an action twice is a no-op. The
# paper broker derives its positions and cash from paper_fills AND these rows (a split re-shapes the
# position on its ex-date, a dividend's cash_delta lands on its effective_date, the pay date).
corporate_action_events = sa.Table(
    "corporate_action_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("action_key", sa.String(96), nullable=False),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("ex_date", sa.Date, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("ratio", DecimalText),
    sa.Column("amount", DecimalText),
    sa.Column("new_symbol", sa.String(32)),
    sa.Column("effective_date", sa.Date, nullable=False),
    sa.Column("quantity_before", DecimalText, nullable=False),
    sa.Column("avg_price_before", DecimalText, nullable=False),
    sa.Column("quantity_after", DecimalText, nullable=False),
    sa.Column("avg_price_after", DecimalText, nullable=False),
    sa.Column("cash_delta", DecimalText, nullable=False),
    sa.Column("orders_adjusted", sa.Integer, nullable=False, default=0),
    sa.Column("note", sa.Text),
    sa.Column("applied_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("account", "action_key", name="uq_corporate_action_events_action"),
)


# Outbound notifications (revision 0010; trading_pipeline/trading/notifications.py): the outbox of
# signals, fills, order rejections/denials and risk alerts, one row per event and channel
# (webhook, email). The event id (``fill-<fill id>``...) is the dedup key: an event is enqueued
# once per channel, sent until a receiver accepts it (delivered_at), then never again.
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("event_id", sa.String(160), primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, index=True),
    sa.Column("delivered_at", sa.DateTime),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_attempt_at", sa.DateTime),
    sa.Column("last_error", sa.Text),
)
