"""The operational store: orders, their history, fills, positions, daily equity marks, risk
events, cursors, the kill switch and API keys.

Written by two kinds of process at once (the API for manual orders, Dagster runs for signal
orders), so it lives in a database made for concurrent writers, not in the warehouse.
SQLAlchemy Core keeps one code path for SQLite (the default, a file under TRADING_HOME) and a
Postgres URL. On SQLite every write transaction starts with ``BEGIN IMMEDIATE`` (the write
lock is taken up front, so two writers queue on ``busy_timeout`` instead of failing with a
lock-upgrade deadlock) and the file runs in WAL mode so readers never block writers.

Money and quantities are stored as decimal strings: exact on both backends.
Schema changes are an ordered list of :data:`MIGRATIONS` recorded in ``schema_version``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from trading_pipeline.trading.brokers.base import BrokerFill, BrokerOrder, OrderStatus, Side
from trading_pipeline.trading.orders import OPEN_STATUSES, Order, OrderEvent, utcnow
from trading_pipeline.trading.positions import Fill, Portfolio, Position

ZERO = Decimal(0)


class DecimalText(sa.types.TypeDecorator):
    """Decimal stored as text: exact on SQLite (whose NUMERIC is a float) and Postgres."""

    impl = sa.String(64)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else str(Decimal(value))

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)

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


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _create(*tables: sa.Table) -> Callable[[Connection], None]:
    def run(conn: Connection) -> None:
        for t in tables:
            t.create(conn, checkfirst=True)

    return run


# Append only; never edit an applied migration. Later ones use conn.execute(sa.text(...)).
MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "orders, order events, fills, accounts, positions, risk events, cursors, kill switch, api keys",
        _create(orders, order_events, fills, accounts, positions, risk_events, alert_cursors, kill_switch, api_keys),
    ),
    Migration(2, "paper broker book", _create(paper_orders, paper_fills, paper_accounts)),
    Migration(3, "daily equity marks (start-of-day equity for the daily loss limit)", _create(equity_marks)),
]


@dataclass(frozen=True)
class KillSwitch:
    active: bool
    reason: str | None = None
    updated_by: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class EquityMark:
    """The first and the latest equity observed for an account on one session date."""

    account: str
    session_date: date
    first_ts: datetime
    first_equity: Decimal
    first_unrealized_pnl: Decimal
    last_ts: datetime
    last_equity: Decimal


@dataclass(frozen=True)
class RiskEvent:
    id: int
    ts: datetime
    client_order_id: str | None
    account: str | None
    symbol: str | None
    side: str | None
    quantity: Decimal | None
    rule: str
    reason: str
    value: Decimal | None
    limit_value: Decimal | None


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


class OpsStore:
    """The ops store at ``url`` (any SQLAlchemy URL); the schema is migrated on open."""

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
    def from_settings(cls, settings: Any = None) -> OpsStore:
        from trading_pipeline.settings import get_settings

        settings = settings or get_settings()
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
        """Apply pending migrations in order, once, even with several processes starting."""
        with self.transaction() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(727274001)"))
            schema_version.create(conn, checkfirst=True)
            applied = set(conn.execute(sa.select(schema_version.c.version)).scalars())
            for m in MIGRATIONS:
                if m.version in applied:
                    continue
                m.apply(conn)
                conn.execute(
                    schema_version.insert().values(
                        version=m.version, description=m.description, applied_at=utcnow()
                    )
                )
        return self.schema_version()

    def schema_version(self) -> int:
        with self.reading() as conn:
            return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0

    # ---- orders ------------------------------------------------------------------------------
    @staticmethod
    def _row_order(r: Any) -> Order:
        m = r._mapping
        return Order(**{k: m[k] for k in orders.c.keys()})

    @staticmethod
    def _event_values(e: OrderEvent) -> dict[str, Any]:
        return {
            "client_order_id": e.client_order_id,
            "ts": e.ts,
            "kind": e.kind,
            "from_status": e.from_status.value if e.from_status else None,
            "to_status": e.to_status.value,
            "reason": e.reason,
        }

    def insert_order(self, order: Order, reason: str = "recorded") -> bool:
        """Record a new order with its first event. False (and no change) if the id exists."""
        try:
            with self.transaction() as conn:
                exists = conn.execute(
                    sa.select(orders.c.client_order_id).where(
                        orders.c.client_order_id == order.client_order_id
                    )
                ).first()
                if exists:
                    return False
                conn.execute(orders.insert().values(**order.record()))
                conn.execute(
                    order_events.insert().values(
                        client_order_id=order.client_order_id,
                        ts=order.created_at,
                        kind="created",
                        from_status=None,
                        to_status=order.status.value,
                        reason=reason,
                    )
                )
                return True
        except IntegrityError:  # a concurrent writer won the race (Postgres)
            return False

    def get_order(self, client_order_id: str) -> Order | None:
        with self.reading() as conn:
            r = conn.execute(sa.select(orders).where(orders.c.client_order_id == client_order_id)).first()
        return self._row_order(r) if r else None

    def list_orders(
        self,
        *,
        account: str | None = None,
        status: OrderStatus | str | Iterable[OrderStatus | str] | None = None,
        symbol: str | None = None,
        strategy: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Order]:
        """Newest first."""
        q = sa.select(orders).order_by(orders.c.created_at.desc(), orders.c.client_order_id)
        if account:
            q = q.where(orders.c.account == account)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            q = q.where(orders.c.status.in_([OrderStatus(s).value for s in statuses]))
        if symbol:
            q = q.where(orders.c.symbol == symbol)
        if strategy:
            q = q.where(orders.c.strategy == strategy)
        if since:
            q = q.where(orders.c.created_at >= since)
        if limit:
            q = q.limit(limit)
        with self.reading() as conn:
            return [self._row_order(r) for r in conn.execute(q)]

    def order_events(self, client_order_id: str) -> list[OrderEvent]:
        with self.reading() as conn:
            rows = conn.execute(
                sa.select(order_events)
                .where(order_events.c.client_order_id == client_order_id)
                .order_by(order_events.c.id)
            ).all()
        return [
            OrderEvent(
                r.client_order_id,
                r.ts,
                OrderStatus(r.from_status) if r.from_status else None,
                OrderStatus(r.to_status),
                r.kind,
                r.reason,
            )
            for r in rows
        ]

    def order_event_log(
        self, after_id: int = 0, *, upto_id: int | None = None, limit: int = 1000
    ) -> list[tuple[int, OrderEvent, Order | None]]:
        """Every order's events with ``after_id < id <= upto_id``, oldest first, each with its id
        and its order as it is now: the log the WebSocket hub tails and replays. Ids grow with
        each insert; on Postgres a later id can commit before an earlier one (the hub waits)."""
        ev = order_events
        q = (
            sa.select(
                ev.c.id.label("event_id"), ev.c.client_order_id.label("event_order_id"), ev.c.ts.label("event_ts"),
                ev.c.kind.label("event_kind"), ev.c.from_status.label("event_from"), ev.c.to_status.label("event_to"),
                ev.c.reason.label("event_reason"), *orders.c,
            )
            .select_from(ev.outerjoin(orders, orders.c.client_order_id == ev.c.client_order_id))
            .where(ev.c.id > after_id)
            .order_by(ev.c.id)
            .limit(limit)
        )
        if upto_id is not None:
            q = q.where(ev.c.id <= upto_id)
        with self.reading() as conn:
            rows = conn.execute(q).all()
        return [
            (
                r.event_id,
                OrderEvent(
                    r.event_order_id,
                    r.event_ts,
                    OrderStatus(r.event_from) if r.event_from else None,
                    OrderStatus(r.event_to),
                    r.event_kind,
                    r.event_reason,
                ),
                self._row_order(r) if r.client_order_id is not None else None,
            )
            for r in rows
        ]

    def last_order_event_id(self) -> int:
        """The newest order event's id (0 when there is none)."""
        with self.reading() as conn:
            return conn.execute(sa.select(sa.func.max(order_events.c.id))).scalar() or 0

    def update_order(
        self, client_order_id: str, change: Callable[[Order, Connection], list[OrderEvent]]
    ) -> Order:
        """Load, change (through the Order state machine) and save one order atomically."""
        with self.transaction() as conn:
            r = conn.execute(
                self._lock_rows(sa.select(orders).where(orders.c.client_order_id == client_order_id))
            ).first()
            if r is None:
                raise KeyError(f"no order {client_order_id!r} in the ops store")
            order = self._row_order(r)
            events = change(order, conn)
            values = order.record()
            values.pop("client_order_id")
            conn.execute(
                orders.update().where(orders.c.client_order_id == client_order_id).values(**values)
            )
            if events:
                conn.execute(order_events.insert(), [self._event_values(e) for e in events])
            return order

    def transition(self, client_order_id: str, to: OrderStatus | str, reason: str) -> Order:
        return self.update_order(client_order_id, lambda o, _c: [o.transition(to, reason)])

    def note(self, client_order_id: str, reason: str) -> Order:
        """Record an event that does not change status (e.g. a broker error, outcome unknown)."""
        return self.update_order(client_order_id, lambda o, _c: [o.note(reason)])

    def sync_from_broker(self, client_order_id: str, bo: BrokerOrder, broker: str | None = None) -> Order:
        """Bring our order in line with the broker's view: new fills, then the status.

        Idempotent: fills are keyed by fill id, and a status we already have is left alone.
        If the broker reports more filled quantity than its fills explain, the difference is
        booked as one synthetic fill keyed by the cumulative quantity.
        """

        def change(o: Order, conn: Connection) -> list[OrderEvent]:
            ev: list[OrderEvent] = []
            o.broker_order_id = bo.broker_order_id or o.broker_order_id
            o.broker = broker or o.broker
            if bo.status == OrderStatus.REJECTED:
                if o.status != OrderStatus.REJECTED:
                    ev.append(o.transition(OrderStatus.REJECTED, f"broker rejected: {bo.reason or 'no reason given'}"))
                return ev
            if o.status == OrderStatus.NEW:
                ev.append(o.transition(OrderStatus.ACCEPTED, f"accepted by broker as {bo.broker_order_id}"))
            for f in bo.fills:
                if o.filled_quantity + f.quantity > o.quantity:
                    continue
                if self._book_fill(conn, o, f):
                    ev.append(o.apply_fill(f.quantity, f.price))
            missing = bo.filled_quantity - o.filled_quantity
            if missing > 0 and bo.avg_fill_price is not None and o.is_open:
                prev_value = (o.avg_fill_price or ZERO) * o.filled_quantity
                price = (bo.avg_fill_price * bo.filled_quantity - prev_value) / missing
                f = BrokerFill(f"{o.client_order_id}:cum:{bo.filled_quantity}", o.client_order_id, missing, price, ZERO, utcnow())
                if self._book_fill(conn, o, f):
                    ev.append(o.apply_fill(f.quantity, f.price))
            if bo.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED) and o.is_open:
                ev.append(o.transition(bo.status, bo.reason or f"{bo.status} at broker"))
            if bo.quantity != o.quantity and o.is_open and bo.quantity > o.filled_quantity:
                ev.append(o.request_modify(quantity=bo.quantity))
            return ev

        return self.update_order(client_order_id, change)

    def count_open_orders(self, account: str) -> int:
        with self.reading() as conn:
            return conn.execute(
                sa.select(sa.func.count())
                .select_from(orders)
                .where(orders.c.account == account, orders.c.status.in_([s.value for s in OPEN_STATUSES]))
            ).scalar_one()

    def count_orders_since(self, account: str, since: datetime) -> int:
        """Orders that went (or were meant to go) to a broker since ``since``; risk rejections excluded."""
        with self.reading() as conn:
            return conn.execute(
                sa.select(sa.func.count())
                .select_from(orders)
                .where(
                    orders.c.account == account,
                    orders.c.created_at >= since,
                    sa.or_(orders.c.status != OrderStatus.REJECTED.value, orders.c.broker_order_id.is_not(None)),
                )
            ).scalar_one()

    # ---- fills, accounts, positions ----------------------------------------------------------
    def _book_fill(self, conn: Connection, order: Order, f: BrokerFill) -> bool:
        """Insert a fill once and update the account's position and cash in the same transaction."""
        if conn.execute(sa.select(fills.c.fill_id).where(fills.c.fill_id == f.fill_id)).first():
            return False
        now = utcnow()
        # On Postgres the account row lock serialises fills per account (SQLite: the write
        # lock). An account nobody created yet is created first, so there is a row to lock.
        insert_if_missing(
            conn, accounts, {"account": order.account},
            {"starting_cash": ZERO, "cash": ZERO, "created_at": now, "updated_at": now},
        )
        acct = conn.execute(self._lock_rows(sa.select(accounts).where(accounts.c.account == order.account))).one()
        cash = acct.cash
        prow = conn.execute(
            sa.select(positions).where(positions.c.account == order.account, positions.c.symbol == order.symbol)
        ).first()
        pf = Portfolio(order.account, cash=cash)
        if prow:
            pf.positions[order.symbol] = Position(order.account, order.symbol, prow.quantity, prow.avg_price, prow.realized_pnl)
        realized = pf.apply_fill(order.symbol, order.side, f.quantity, f.price, f.commission)
        p = pf.positions[order.symbol]
        conn.execute(
            fills.insert().values(
                fill_id=f.fill_id,
                client_order_id=order.client_order_id,
                account=order.account,
                symbol=order.symbol,
                side=order.side.value,
                quantity=f.quantity,
                price=f.price,
                commission=f.commission,
                realized_pnl=realized,
                ts=f.ts,
            )
        )
        pvals = {"quantity": p.quantity, "avg_price": p.avg_price, "realized_pnl": p.realized_pnl, "updated_at": now}
        if prow:
            conn.execute(
                positions.update()
                .where(positions.c.account == order.account, positions.c.symbol == order.symbol)
                .values(**pvals)
            )
        else:
            conn.execute(positions.insert().values(account=order.account, symbol=order.symbol, **pvals))
        conn.execute(accounts.update().where(accounts.c.account == order.account).values(cash=pf.cash, updated_at=now))
        return True

    def ensure_account(self, account: str, starting_cash: Decimal) -> bool:
        """Create the account with its starting cash; False if it already exists (unchanged)."""
        now = utcnow()
        try:
            with self.transaction() as conn:
                if conn.execute(sa.select(accounts.c.account).where(accounts.c.account == account)).first():
                    return False
                conn.execute(
                    accounts.insert().values(
                        account=account, starting_cash=starting_cash, cash=starting_cash, created_at=now, updated_at=now
                    )
                )
                return True
        except IntegrityError:
            return False

    def has_account(self, account: str) -> bool:
        with self.reading() as conn:
            return conn.execute(sa.select(accounts.c.account).where(accounts.c.account == account)).first() is not None

    def list_accounts(self) -> list[str]:
        with self.reading() as conn:
            return list(conn.execute(sa.select(accounts.c.account).order_by(accounts.c.account)).scalars())

    def portfolio(self, account: str) -> Portfolio:
        """Cash and positions as booked (maintained fill by fill)."""
        with self.reading() as conn:
            acct = conn.execute(sa.select(accounts).where(accounts.c.account == account)).first()
            rows = conn.execute(sa.select(positions).where(positions.c.account == account)).all()
        pf = Portfolio(account, starting_cash=acct.starting_cash if acct else ZERO, cash=acct.cash if acct else ZERO)
        for r in rows:
            pf.positions[r.symbol] = Position(account, r.symbol, r.quantity, r.avg_price, r.realized_pnl)
        return pf

    def list_fills(self, account: str | None = None, since: datetime | None = None) -> list[Fill]:
        q = sa.select(fills).order_by(fills.c.ts, fills.c.fill_id)
        if account:
            q = q.where(fills.c.account == account)
        if since:
            q = q.where(fills.c.ts >= since)
        with self.reading() as conn:
            return [
                Fill(r.fill_id, r.client_order_id, r.account, r.symbol, Side(r.side), r.quantity, r.price, r.commission, r.ts, r.realized_pnl)
                for r in conn.execute(q)
            ]

    def rebuild_portfolio(self, account: str) -> Portfolio:
        """The portfolio recomputed from the fills alone: to check the maintained one."""
        pf = self.portfolio(account)
        return Portfolio.from_fills(account, pf.starting_cash, self.list_fills(account))

    def realized_pnl_since(self, account: str, since: datetime) -> Decimal:
        with self.reading() as conn:
            values = conn.execute(
                sa.select(fills.c.realized_pnl).where(fills.c.account == account, fills.c.ts >= since)
            ).scalars()
            return sum(values, ZERO)

    def has_fills_before(self, account: str, ts: datetime) -> bool:
        with self.reading() as conn:
            return conn.execute(
                sa.select(fills.c.fill_id).where(fills.c.account == account, fills.c.ts < ts).limit(1)
            ).first() is not None

    def symbols_in_play(self, account: str) -> list[str]:
        """Symbols the account holds or has working orders in: the ones a risk check needs prices for."""
        open_ = [s.value for s in OPEN_STATUSES]
        with self.reading() as conn:
            held = conn.execute(
                sa.select(positions.c.symbol, positions.c.quantity).where(positions.c.account == account)
            ).all()
            working = conn.execute(
                sa.select(orders.c.symbol).where(orders.c.account == account, orders.c.status.in_(open_)).distinct()
            ).scalars()
            return sorted({s for s, q in held if q != 0} | set(working))

    # ---- daily equity marks ------------------------------------------------------------------
    def record_equity_mark(
        self, account: str, session_date: date, equity: Decimal, unrealized_pnl: Decimal, ts: datetime
    ) -> None:
        """Observe the account's equity at ``ts``: the first observation of a session date sets
        its opening mark, and the latest (by ``ts``) its closing mark. Atomic on both backends."""
        with self.transaction() as conn:
            stmt = _insert(conn, equity_marks).values(
                account=account, session_date=session_date, first_ts=ts, first_equity=equity,
                first_unrealized_pnl=unrealized_pnl, last_ts=ts, last_equity=equity,
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["account", "session_date"],
                    set_={"last_ts": stmt.excluded.last_ts, "last_equity": stmt.excluded.last_equity},
                    where=equity_marks.c.last_ts <= stmt.excluded.last_ts,
                )
            )

    def equity_mark(self, account: str, session_date: date) -> EquityMark | None:
        with self.reading() as conn:
            r = conn.execute(
                sa.select(equity_marks).where(equity_marks.c.account == account, equity_marks.c.session_date == session_date)
            ).first()
        return EquityMark(**dict(r._mapping)) if r else None

    def last_equity_mark_before(self, account: str, session_date: date) -> EquityMark | None:
        """The account's latest mark on a session date before ``session_date``."""
        with self.reading() as conn:
            r = conn.execute(
                sa.select(equity_marks)
                .where(equity_marks.c.account == account, equity_marks.c.session_date < session_date)
                .order_by(equity_marks.c.session_date.desc())
                .limit(1)
            ).first()
        return EquityMark(**dict(r._mapping)) if r else None

    MIRRORED_TABLES = ("orders", "order_events", "fills", "positions", "accounts", "risk_events", "equity_marks")

    def rows(self, table: str) -> list[dict[str, Any]]:
        """All rows of one ops table (decimals as Decimal): for mirroring into the warehouse."""
        if table not in self.MIRRORED_TABLES:
            raise ValueError(f"{table!r} is not mirrored; one of {', '.join(self.MIRRORED_TABLES)}")
        t = metadata.tables[table]
        with self.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(t))]

    # ---- risk events -------------------------------------------------------------------------
    def record_risk_event(
        self,
        *,
        rule: str,
        reason: str,
        client_order_id: str | None = None,
        account: str | None = None,
        symbol: str | None = None,
        side: str | None = None,
        quantity: Decimal | None = None,
        value: Decimal | None = None,
        limit_value: Decimal | None = None,
        ts: datetime | None = None,
    ) -> int:
        with self.transaction() as conn:
            res = conn.execute(
                risk_events.insert().values(
                    ts=ts or utcnow(),
                    client_order_id=client_order_id,
                    account=account,
                    symbol=symbol,
                    side=side,
                    quantity=quantity,
                    rule=rule,
                    reason=reason,
                    value=value,
                    limit_value=limit_value,
                )
            )
            return int(res.inserted_primary_key[0])

    def list_risk_events(self, *, account: str | None = None, limit: int = 100) -> list[RiskEvent]:
        q = sa.select(risk_events).order_by(risk_events.c.id.desc()).limit(limit)
        if account:
            q = q.where(risk_events.c.account == account)
        with self.reading() as conn:
            return [RiskEvent(**dict(r._mapping)) for r in conn.execute(q)]

    # ---- kill switch ---------------------------------------------------------------------------
    def set_kill_switch(self, active: bool, reason: str | None = None, updated_by: str | None = None) -> KillSwitch:
        now = utcnow()
        values = {"active": active, "reason": reason, "updated_by": updated_by, "updated_at": now}
        with self.transaction() as conn:
            upsert(conn, kill_switch, {"id": 1}, values)
        return KillSwitch(active, reason, updated_by, now)

    def kill_switch(self) -> KillSwitch:
        with self.reading() as conn:
            r = conn.execute(sa.select(kill_switch).where(kill_switch.c.id == 1)).first()
        return KillSwitch(bool(r.active), r.reason, r.updated_by, r.updated_at) if r else KillSwitch(False)

    # ---- alert cursors -----------------------------------------------------------------------
    def get_cursor(self, name: str) -> str | None:
        with self.reading() as conn:
            return conn.execute(sa.select(alert_cursors.c.cursor).where(alert_cursors.c.name == name)).scalar()

    def set_cursor(self, name: str, cursor: str) -> None:
        now = utcnow()
        with self.transaction() as conn:
            upsert(conn, alert_cursors, {"name": name}, {"cursor": cursor, "updated_at": now})

    # ---- API keys (hashes only; the API engineer owns hashing and checking) ------------------
    def create_api_key(self, name: str, key_hash: str) -> int:
        with self.transaction() as conn:
            res = conn.execute(api_keys.insert().values(name=name, key_hash=key_hash, created_at=utcnow()))
            return int(res.inserted_primary_key[0])

    def revoke_api_key(self, key_id: int) -> bool:
        with self.transaction() as conn:
            return bool(
                conn.execute(
                    api_keys.update()
                    .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                ).rowcount
            )

    def find_api_key(self, key_hash: str) -> dict[str, Any] | None:
        """The active key with this hash, or None (revoked keys are not found)."""
        with self.reading() as conn:
            r = conn.execute(
                sa.select(api_keys).where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
            ).first()
        return dict(r._mapping) if r else None

    def list_api_keys(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        q = sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked_at).order_by(api_keys.c.id)
        if not include_revoked:
            q = q.where(api_keys.c.revoked_at.is_(None))
        with self.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]
