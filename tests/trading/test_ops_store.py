"""The ops store on a real SQLite file and a real Postgres database (the ``store_url``
fixture runs each test on both): schema and its migrations, orders and history, fills, and
two writers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from trading_pipeline.trading.brokers.base import BrokerFill, BrokerOrder
from trading_pipeline.trading.model import OrderStatus, OrderType, Side, TimeInForce
from trading_pipeline.trading.orders import Order
from trading_pipeline.trading.store import OpsStore, metadata, migrations

D = Decimal
T = datetime(2024, 3, 4, 15)
HEAD = migrations.head()  # the newest revision: each new one need not edit this file


def order(coid: str = "o1", qty: str = "10", account: str = "acct", symbol: str = "AAA", side: Side = Side.BUY, **kw) -> Order:
    return Order(coid, account, symbol, side, D(qty), **kw)


def filled(coid: str, qty: str, price: str, fill_id: str | None = None, side: Side = Side.BUY) -> BrokerOrder:
    f = BrokerFill(fill_id or f"{coid}-f", coid, D(qty), D(price), D("1"), T)
    return BrokerOrder(coid, f"b-{coid}", "AAA", side, D(qty), D(qty), OrderStatus.FILLED, D(price), fills=(f,))


def test_schema_is_migrated_once_and_sqlite_runs_in_wal(store_url) -> None:
    empty = sa.create_engine(store_url)
    assert not sa.inspect(empty).get_table_names()  # migrations start from an empty database
    empty.dispose()
    s1 = OpsStore(store_url)
    assert migrations.revisions()[-1] == migrations.head() == HEAD
    assert s1.schema_revision() == HEAD
    assert s1.schema_version() == len(migrations.revisions()) == int(HEAD[:4])
    s2 = OpsStore(store_url)  # reopening applies nothing twice
    with s2.reading() as conn:
        stamped = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        if s2.is_sqlite:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
            assert mode == "wal" and timeout >= 30000
        else:
            assert conn.dialect.name == "postgresql"
    assert stamped == [HEAD]
    tables = set(sa.inspect(s2.engine).get_table_names())
    assert tables >= {
        "orders", "order_events", "fills", "positions", "accounts", "risk_events",
        "alert_cursors", "kill_switch", "api_keys", "paper_orders", "paper_fills", "paper_accounts", "equity_marks",
    }
    assert "schema_version" not in tables  # the pre-Alembic bookkeeping is not made any more
    s1.close()
    s2.close()


def test_the_revisions_build_the_tables_the_code_uses(store) -> None:
    """schema.py (what the code reads and writes) and the revisions (what the database gets)
    agree: a change to one without the other fails here."""
    with store.reading() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []


# ---- stores made before Alembic ------------------------------------------------------------
# What the hand-rolled migrations (schema.py's MIGRATIONS, up to release 4) executed, frozen
# here as SQL so these tests keep building the old stores whatever the code becomes. The DDL
# is SQLAlchemy's for the tables of that time; {ts} and {serial} differ by database.
OLD_TYPES = {
    "sqlite": {"ts": "DATETIME", "serial": "INTEGER"},
    "postgresql": {"ts": "TIMESTAMP WITHOUT TIME ZONE", "serial": "SERIAL"},
}
OLD_SCHEMA_VERSION_DDL = """CREATE TABLE schema_version (
    version INTEGER NOT NULL,
    description VARCHAR(200) NOT NULL,
    applied_at {ts} NOT NULL,
    PRIMARY KEY (version)
)"""
OLD_MIGRATION_DESCRIPTIONS = {
    1: "orders, order events, fills, accounts, positions, risk events, cursors, kill switch, api keys",
    2: "paper broker book",
    3: "daily equity marks (start-of-day equity for the daily loss limit)",
    4: "risk denials get their own status, denied (rejected stays for broker refusals)",
}
OLD_MIGRATION_SQL: dict[int, list[str]] = {
    1: [
        """CREATE TABLE orders (
    client_order_id VARCHAR(64) NOT NULL,
    account VARCHAR(64) NOT NULL,
    strategy VARCHAR(64) NOT NULL,
    symbol VARCHAR(32) NOT NULL,
    side VARCHAR(8) NOT NULL,
    order_type VARCHAR(16) NOT NULL,
    quantity VARCHAR(64) NOT NULL,
    limit_price VARCHAR(64),
    time_in_force VARCHAR(8) NOT NULL,
    status VARCHAR(24) NOT NULL,
    filled_quantity VARCHAR(64) NOT NULL,
    avg_fill_price VARCHAR(64),
    broker VARCHAR(32),
    broker_order_id VARCHAR(64),
    signal_ts {ts},
    reason TEXT,
    cancel_requested BOOLEAN NOT NULL,
    created_at {ts} NOT NULL,
    updated_at {ts} NOT NULL,
    PRIMARY KEY (client_order_id)
)""",
        "CREATE INDEX ix_orders_account ON orders (account)",
        "CREATE INDEX ix_orders_created_at ON orders (created_at)",
        "CREATE INDEX ix_orders_status ON orders (status)",
        "CREATE INDEX ix_orders_symbol ON orders (symbol)",
        """CREATE TABLE order_events (
    id {serial} NOT NULL,
    client_order_id VARCHAR(64) NOT NULL,
    ts {ts} NOT NULL,
    kind VARCHAR(24) NOT NULL,
    from_status VARCHAR(24),
    to_status VARCHAR(24) NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (id)
)""",
        "CREATE INDEX ix_order_events_client_order_id ON order_events (client_order_id)",
        """CREATE TABLE fills (
    fill_id VARCHAR(96) NOT NULL,
    client_order_id VARCHAR(64) NOT NULL,
    account VARCHAR(64) NOT NULL,
    symbol VARCHAR(32) NOT NULL,
    side VARCHAR(8) NOT NULL,
    quantity VARCHAR(64) NOT NULL,
    price VARCHAR(64) NOT NULL,
    commission VARCHAR(64) NOT NULL,
    realized_pnl VARCHAR(64) NOT NULL,
    ts {ts} NOT NULL,
    PRIMARY KEY (fill_id)
)""",
        "CREATE INDEX ix_fills_account ON fills (account)",
        "CREATE INDEX ix_fills_client_order_id ON fills (client_order_id)",
        "CREATE INDEX ix_fills_ts ON fills (ts)",
        """CREATE TABLE accounts (
    account VARCHAR(64) NOT NULL,
    starting_cash VARCHAR(64) NOT NULL,
    cash VARCHAR(64) NOT NULL,
    created_at {ts} NOT NULL,
    updated_at {ts} NOT NULL,
    PRIMARY KEY (account)
)""",
        """CREATE TABLE positions (
    account VARCHAR(64) NOT NULL,
    symbol VARCHAR(32) NOT NULL,
    quantity VARCHAR(64) NOT NULL,
    avg_price VARCHAR(64) NOT NULL,
    realized_pnl VARCHAR(64) NOT NULL,
    updated_at {ts} NOT NULL,
    PRIMARY KEY (account, symbol)
)""",
        """CREATE TABLE risk_events (
    id {serial} NOT NULL,
    ts {ts} NOT NULL,
    client_order_id VARCHAR(64),
    account VARCHAR(64),
    symbol VARCHAR(32),
    side VARCHAR(8),
    quantity VARCHAR(64),
    rule VARCHAR(48) NOT NULL,
    reason TEXT NOT NULL,
    value VARCHAR(64),
    limit_value VARCHAR(64),
    PRIMARY KEY (id)
)""",
        "CREATE INDEX ix_risk_events_client_order_id ON risk_events (client_order_id)",
        "CREATE INDEX ix_risk_events_ts ON risk_events (ts)",
        """CREATE TABLE alert_cursors (
    name VARCHAR(128) NOT NULL,
    cursor TEXT NOT NULL,
    updated_at {ts} NOT NULL,
    PRIMARY KEY (name)
)""",
        """CREATE TABLE kill_switch (
    id INTEGER NOT NULL,
    active BOOLEAN NOT NULL,
    reason TEXT,
    updated_by VARCHAR(64),
    updated_at {ts} NOT NULL,
    PRIMARY KEY (id)
)""",
        """CREATE TABLE api_keys (
    id {serial} NOT NULL,
    name VARCHAR(128) NOT NULL,
    key_hash VARCHAR(128) NOT NULL,
    created_at {ts} NOT NULL,
    revoked_at {ts},
    PRIMARY KEY (id),
    UNIQUE (key_hash)
)""",
    ],
    2: [
        """CREATE TABLE paper_orders (
    client_order_id VARCHAR(64) NOT NULL,
    broker_order_id VARCHAR(64) NOT NULL,
    account VARCHAR(64) NOT NULL,
    symbol VARCHAR(32) NOT NULL,
    side VARCHAR(8) NOT NULL,
    order_type VARCHAR(16) NOT NULL,
    quantity VARCHAR(64) NOT NULL,
    limit_price VARCHAR(64),
    time_in_force VARCHAR(8) NOT NULL,
    status VARCHAR(24) NOT NULL,
    filled_quantity VARCHAR(64) NOT NULL,
    avg_fill_price VARCHAR(64),
    reason TEXT,
    submitted_at {ts} NOT NULL,
    updated_at {ts} NOT NULL,
    PRIMARY KEY (client_order_id),
    UNIQUE (broker_order_id)
)""",
        "CREATE INDEX ix_paper_orders_account ON paper_orders (account)",
        "CREATE INDEX ix_paper_orders_status ON paper_orders (status)",
        """CREATE TABLE paper_fills (
    fill_id VARCHAR(96) NOT NULL,
    client_order_id VARCHAR(64) NOT NULL,
    account VARCHAR(64) NOT NULL,
    symbol VARCHAR(32) NOT NULL,
    side VARCHAR(8) NOT NULL,
    quantity VARCHAR(64) NOT NULL,
    price VARCHAR(64) NOT NULL,
    commission VARCHAR(64) NOT NULL,
    bar_ts {ts} NOT NULL,
    ts {ts} NOT NULL,
    PRIMARY KEY (fill_id)
)""",
        "CREATE INDEX ix_paper_fills_account ON paper_fills (account)",
        "CREATE INDEX ix_paper_fills_client_order_id ON paper_fills (client_order_id)",
        """CREATE TABLE paper_accounts (
    account VARCHAR(64) NOT NULL,
    starting_cash VARCHAR(64) NOT NULL,
    created_at {ts} NOT NULL,
    PRIMARY KEY (account)
)""",
    ],
    3: [
        """CREATE TABLE equity_marks (
    account VARCHAR(64) NOT NULL,
    session_date DATE NOT NULL,
    first_ts {ts} NOT NULL,
    first_equity VARCHAR(64) NOT NULL,
    first_unrealized_pnl VARCHAR(64) NOT NULL,
    last_ts {ts} NOT NULL,
    last_equity VARCHAR(64) NOT NULL,
    PRIMARY KEY (account, session_date)
)""",
    ],
    4: [
        "UPDATE orders SET status = 'denied' WHERE status = 'rejected' AND broker_order_id IS NULL "
        "AND client_order_id IN (SELECT client_order_id FROM order_events "
        "WHERE to_status = 'rejected' AND reason LIKE 'risk rule %')",
        "UPDATE order_events SET to_status = 'denied' WHERE to_status = 'rejected' AND reason LIKE 'risk rule %'",
    ],
}
OLD_ORDER_SQL = (
    "INSERT INTO orders (client_order_id, account, strategy, symbol, side, order_type, quantity, time_in_force, "
    "status, filled_quantity, broker_order_id, reason, cancel_requested, created_at, updated_at) VALUES "
    "(:coid, 'acct', 'manual', 'AAA', 'buy', 'market', '10', 'day', 'rejected', '0', :broker_id, :reason, "
    ":no, :ts, :ts)"
)
OLD_EVENT_SQL = (
    "INSERT INTO order_events (client_order_id, ts, kind, from_status, to_status, reason) "
    "VALUES (:coid, :ts, 'transition', 'new', 'rejected', :reason)"
)
REJECTED = [  # (client_order_id, reason, broker order id): one risk denial, two broker refusals
    ("risk-1", "risk rule max_order_notional: 9,000 > 5,000", None),
    ("broker-1", "broker refused: unknown symbol", None),
    ("broker-2", "broker rejected: halted", "b-2"),
]


def _old_sql(conn: sa.Connection, sql: str, **params) -> None:
    stmt = sa.text(sql.format(**OLD_TYPES[conn.dialect.name]))
    if "ts" in params:  # the store's datetimes, as the old release's DateTime columns bound them
        stmt = stmt.bindparams(sa.bindparam("ts", type_=sa.DateTime))
    conn.execute(stmt, params)


def _store_of_release(url: str, version: int) -> None:
    """An ops store as a release before Alembic left it: migrations 1..``version`` applied and
    recorded in ``schema_version``, no ``alembic_version``, and three rejected orders written
    after migration 3 (by that release: before ``denied`` existed). A version-4 store also got
    one more risk denial stored as ``rejected`` after migration 4: a replay of migration 4
    would turn it into ``denied``, stamping must not."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _old_sql(conn, OLD_SCHEMA_VERSION_DDL)
        for v in range(1, version + 1):
            if v == 4:  # the orders release 3 wrote were there when migration 4 ran
                _write_rejected(conn, REJECTED)
            for sql in OLD_MIGRATION_SQL[v]:
                _old_sql(conn, sql)
            _old_sql(conn, "INSERT INTO schema_version (version, description, applied_at) VALUES (:v, :d, :ts)",
                     v=v, d=OLD_MIGRATION_DESCRIPTIONS[v], ts=T)
        if version < 4:
            _write_rejected(conn, REJECTED)
        else:
            _write_rejected(conn, [("risk-late", "risk rule max_open_orders: 3 >= 3", None)])
    engine.dispose()


def _write_rejected(conn: sa.Connection, rows) -> None:
    for coid, reason, broker_id in rows:
        _old_sql(conn, OLD_ORDER_SQL, coid=coid, broker_id=broker_id, reason=reason, no=False, ts=T)
        _old_sql(conn, OLD_EVENT_SQL, coid=coid, reason=reason, ts=T)


def _tables(engine: sa.Engine) -> dict[str, tuple]:
    """Every table of ours as the database describes it (columns, keys, indexes, uniques)."""
    insp = sa.inspect(engine)
    out = {}
    for t in sorted(set(insp.get_table_names()) - {"alembic_version", "schema_version"}):
        out[t] = (
            [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)],
            insp.get_pk_constraint(t)["constrained_columns"],
            sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(t)),
            sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(t)),
        )
    return out


@pytest.mark.parametrize("version", [3, 4])
def test_a_store_of_a_release_before_alembic_upgrades_in_place(store_url, version) -> None:
    _store_of_release(store_url, version)
    s = OpsStore(store_url)
    assert s.schema_revision() == HEAD and s.schema_version() == len(migrations.revisions())
    statuses = {o.client_order_id: o.status for o in s.list_orders()}
    assert {k: statuses[k] for k in ("risk-1", "broker-1", "broker-2")} == {
        "risk-1": OrderStatus.DENIED, "broker-1": OrderStatus.REJECTED, "broker-2": OrderStatus.REJECTED,
    }
    assert [e.to_status for e in s.order_events("risk-1")] == [OrderStatus.DENIED]
    assert [e.to_status for e in s.order_events("broker-1")] == [OrderStatus.REJECTED]
    if version == 4:  # stamped at 0004, not replayed from 0004
        assert statuses["risk-late"] == OrderStatus.REJECTED
        assert [e.to_status for e in s.order_events("risk-late")] == [OrderStatus.REJECTED]
        assert s.count_orders_since("acct", T) == 3
    else:
        assert s.count_orders_since("acct", T) == 2  # the two the brokers saw
    with s.reading() as conn:  # the old bookkeeping is left as it was
        assert conn.execute(sa.text("SELECT version FROM schema_version ORDER BY version")).scalars().all() == list(
            range(1, version + 1)
        )
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
    s.ensure_account("acct", D(1000))  # and the store works as usual
    s.insert_order(order("after"))
    assert s.get_order("after").status == OrderStatus.NEW
    s.close()


def test_the_frozen_old_sql_is_what_the_revisions_build(store_url) -> None:
    """The old DDL above and revisions 0001-0003 describe the same tables (on both databases)."""
    _store_of_release(store_url, 4)
    old = sa.create_engine(store_url)
    before = _tables(old)
    old.dispose()
    s = OpsStore(store_url)
    with s.transaction() as conn:
        migrations.downgrade(conn, "base")
        assert set(sa.inspect(conn).get_table_names()) == {"alembic_version", "schema_version"}
        migrations.upgrade(conn, "0004_denied_status")  # the last revision the old SQL has a twin of
    assert _tables(s.engine) == before
    assert s.schema_revision() == "0004_denied_status"
    s.migrate()
    assert s.schema_revision() == HEAD
    s.close()


def test_a_data_revision_downgrades_and_upgrades(store) -> None:
    store.insert_order(order("d"))
    store.transition("d", OrderStatus.DENIED, "risk rule max_order_notional: too big")
    with store.transaction() as conn:
        assert migrations.downgrade(conn, "0003_equity_marks") == "0003_equity_marks"
    assert store.schema_version() == 3
    with store.reading() as conn:
        assert conn.execute(sa.text("SELECT status FROM orders")).scalar() == "rejected"
    store.migrate()
    assert store.schema_version() == len(migrations.revisions()) and store.get_order("d").status == OrderStatus.DENIED


def test_processes_opening_an_old_store_at_once_stamp_and_upgrade_it_once(store_url) -> None:
    _store_of_release(store_url, 3)
    barrier = threading.Barrier(6)

    def open_store(_):
        barrier.wait()
        s = OpsStore(store_url)
        try:
            return s.schema_revision()
        finally:
            s.close()

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(open_store, range(6))) == [HEAD] * 6
    s = OpsStore(store_url)
    with s.reading() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
    assert s.get_order("risk-1").status == OrderStatus.DENIED
    s.close()


def test_a_store_at_an_unknown_legacy_version_is_refused(store_url) -> None:
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        _old_sql(conn, OLD_SCHEMA_VERSION_DDL)
        _old_sql(conn, "INSERT INTO schema_version (version, description, applied_at) VALUES (9, 'x', :ts)", ts=T)
    engine.dispose()
    with pytest.raises(RuntimeError, match="schema_version 9"):
        OpsStore(store_url)


def test_orders_round_trip_with_history(store) -> None:
    o = order(signal_ts=T, strategy="breakout")
    assert store.insert_order(o, reason="from signal")
    assert not store.insert_order(order(qty="99"))  # same id: ignored, first one kept
    got = store.get_order("o1")
    assert got is not None and got.quantity == D(10) and got.signal_ts == T and got.strategy == "breakout"
    store.transition("o1", OrderStatus.ACCEPTED, "ack")
    store.note("o1", "broker slow")
    store.update_order("o1", lambda o, _c: [o.request_cancel("user asked")])
    store.transition("o1", OrderStatus.CANCELLED, "cancelled at broker")
    events = store.order_events("o1")
    assert [(e.kind, e.to_status) for e in events] == [
        ("created", OrderStatus.NEW),
        ("transition", OrderStatus.ACCEPTED),
        ("note", OrderStatus.ACCEPTED),
        ("cancel_request", OrderStatus.ACCEPTED),
        ("transition", OrderStatus.CANCELLED),
    ]
    assert events[0].reason == "from signal" and events[-1].reason == "cancelled at broker"
    final = store.get_order("o1")
    assert final.status == OrderStatus.CANCELLED and final.cancel_requested and final.reason == "cancelled at broker"


def test_illegal_transition_leaves_store_unchanged(store) -> None:
    import pytest

    from trading_pipeline.trading.orders import IllegalTransition

    store.insert_order(order())
    with pytest.raises(IllegalTransition):
        store.transition("o1", OrderStatus.FILLED, "nope")
    assert store.get_order("o1").status == OrderStatus.NEW
    assert len(store.order_events("o1")) == 1


def test_list_orders_filters(store) -> None:
    store.insert_order(order("a", symbol="AAA", created_at=T))
    store.insert_order(order("b", symbol="BBB", account="other", created_at=T + timedelta(seconds=1)))
    store.insert_order(order("c", symbol="AAA", strategy="crp", created_at=T + timedelta(seconds=2)))
    store.insert_order(order("d", symbol="BBB", created_at=T + timedelta(seconds=3)))
    store.transition("c", OrderStatus.DENIED, "risk rule max_order_notional: too big")
    store.transition("d", OrderStatus.REJECTED, "broker refused: unknown symbol")
    assert [o.client_order_id for o in store.list_orders()] == ["d", "c", "b", "a"]
    assert [o.client_order_id for o in store.list_orders(account="acct")] == ["d", "c", "a"]
    assert [o.client_order_id for o in store.list_orders(symbol="AAA", status="new")] == ["a"]
    assert [o.client_order_id for o in store.list_orders(strategy="crp")] == ["c"]
    assert [o.client_order_id for o in store.list_orders(limit=1)] == ["d"]
    assert store.count_open_orders("acct") == 1
    # the risk-denied order never went out; the broker-rejected one did
    assert store.count_orders_since("acct", T) == 2


def test_fills_positions_cash_are_booked_once(store) -> None:
    store.ensure_account("acct", D(10000))
    assert not store.ensure_account("acct", D(1))  # unchanged
    store.insert_order(order("buy", qty="10"))
    bo = filled("buy", "10", "100")
    store.sync_from_broker("buy", bo)
    store.sync_from_broker("buy", bo)  # a repeat sync books nothing twice
    store.insert_order(order("sell", qty="4", side=Side.SELL))
    store.sync_from_broker("sell", filled("sell", "4", "110", side=Side.SELL))
    pf = store.portfolio("acct")
    assert pf.quantity("AAA") == D(6)
    assert pf.cash == D(10000) - D(1001) + D(439)
    assert pf.positions["AAA"].realized_pnl == D(40) - D(2)
    assert len(store.list_fills("acct")) == 2
    rebuilt = store.rebuild_portfolio("acct")
    assert rebuilt.cash == pf.cash and rebuilt.quantity("AAA") == pf.quantity("AAA")
    assert store.realized_pnl_since("acct", T) == D(38)
    assert store.get_order("buy").status == OrderStatus.FILLED
    mirrored = {r["fill_id"]: r for r in store.rows("fills")}
    assert mirrored["sell-f"]["realized_pnl"] == D(39) and len(store.rows("order_events")) >= 4


def test_broker_fill_without_fill_records_is_booked_as_cumulative(store) -> None:
    store.ensure_account("acct", D(1000))
    store.insert_order(order("o", qty="10"))
    partial = BrokerOrder("o", "b", "AAA", Side.BUY, D(10), D(4), OrderStatus.PARTIALLY_FILLED, D(10))
    o = store.sync_from_broker("o", partial)
    assert o.status == OrderStatus.PARTIALLY_FILLED and o.filled_quantity == D(4)
    done = BrokerOrder("o", "b", "AAA", Side.BUY, D(10), D(10), OrderStatus.FILLED, D(11))
    o = store.sync_from_broker("o", done)
    assert o.status == OrderStatus.FILLED and o.avg_fill_price == D(11)
    assert [f.quantity for f in store.list_fills("acct")] == [D(4), D(6)]
    assert store.portfolio("acct").cash == D(1000) - D(110)


def test_kill_switch_cursors_risk_events_api_keys(store) -> None:
    assert not store.kill_switch().active
    store.set_kill_switch(True, "halt", "cli")
    ks = store.kill_switch()
    assert ks.active and ks.reason == "halt" and ks.updated_by == "cli"
    store.set_kill_switch(False)
    assert not store.kill_switch().active
    assert store.get_cursor("signals") is None
    store.set_cursor("signals", "2024-03-04T15:00")
    store.set_cursor("signals", "2024-03-04T16:00")
    assert store.get_cursor("signals") == "2024-03-04T16:00"
    store.record_risk_event(rule="max_order_quantity", reason="too big", value=D(10), limit_value=D(5))
    ev = store.list_risk_events()[0]
    assert ev.rule == "max_order_quantity" and ev.value == D(10) and ev.limit_value == D(5)
    kid = store.create_api_key("dash", "hash1")
    assert store.find_api_key("hash1")["name"] == "dash"
    assert store.revoke_api_key(kid) and not store.revoke_api_key(kid)
    assert store.find_api_key("hash1") is None
    assert store.list_api_keys() == [] and len(store.list_api_keys(include_revoked=True)) == 1


WRITER = textwrap.dedent(
    """
    import sys, time
    from decimal import Decimal as D
    from datetime import datetime
    from trading_pipeline.trading.brokers.base import BrokerFill, BrokerOrder
    from trading_pipeline.trading.model import OrderStatus, Side
    from trading_pipeline.trading.store import OpsStore
    from trading_pipeline.trading.orders import Order

    import faulthandler, pathlib
    faulthandler.dump_traceback_later(20, exit=True)  # a hang fails fast, showing where
    url, tag, n, barrier = sys.argv[1], sys.argv[2], int(sys.argv[3]), pathlib.Path(sys.argv[4])
    store = OpsStore(url)
    store.ensure_account("acct", D(100000))
    (barrier / tag).touch()
    while len(list(barrier.iterdir())) < 2:  # start writing together
        time.sleep(0.005)
    first = time.time()
    for i in range(n):
        coid = f"{tag}-{i}"
        assert store.insert_order(Order(coid, "acct", "AAA", Side.BUY, D(1)))
        fill = BrokerFill(coid + "-f", coid, D(1), D(10), D(0), datetime(2024, 1, 1))
        store.sync_from_broker(coid, BrokerOrder(coid, "b" + coid, "AAA", Side.BUY, D(1), D(1), OrderStatus.FILLED, D(10), fills=(fill,)))
        store.record_risk_event(rule="probe", reason=coid)
        store.set_cursor("shared", coid)
        store.insert_order(Order("shared-order", "acct", "BBB", Side.BUY, D(1)))  # both race on one id
    print("done", tag, first, time.time())
    """
)


def test_two_processes_write_concurrently(store_url, tmp_path) -> None:
    """Two real processes (fresh file: they also race on the migration) write at once.

    Every order, event and fill must land, and the positions/cash rows (read-modify-write)
    must lose no update: the booked position equals the sum of both writers' fills.
    """
    n = 150
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, store_url, tag, str(n), str(barrier)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for tag in ("p1", "p2")
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.startswith("done")
    (s1, e1), (s2, e2) = ([float(x) for x in out.split()[2:4]] for out, _ in outs)
    assert s1 < e2 and s2 < e1, "the writers did not overlap in time"
    store = OpsStore(store_url)
    assert store.schema_version() == len(migrations.revisions())
    assert store.schema_revision() == HEAD
    orders_ = store.list_orders(account="acct")
    assert len(orders_) == 2 * n + 1
    assert sum(1 for o in orders_ if o.status == OrderStatus.FILLED) == 2 * n
    pf = store.portfolio("acct")
    assert pf.quantity("AAA") == D(2 * n)
    assert pf.cash == D(100000) - D(10) * 2 * n
    assert store.rebuild_portfolio("acct").cash == pf.cash
    assert len(store.list_risk_events(limit=10_000)) == 2 * n
    assert store.get_cursor("shared") in {f"p1-{n - 1}", f"p2-{n - 1}"}
    assert len(store.order_events("shared-order")) == 1
    store.close()


# ---- stop orders (revision 0005) ------------------------------------------------------------
def test_stop_orders_round_trip(store) -> None:
    store.insert_order(order("st", order_type=OrderType.STOP, stop_price=D("105.25"), time_in_force=TimeInForce.GTC))
    store.insert_order(order("sl", side=Side.SELL, order_type=OrderType.STOP_LIMIT, stop_price=D("95"), limit_price=D("94.5")))
    store.insert_order(order("tp", side=Side.SELL, order_type=OrderType.TRAILING_STOP, trail_percent=D("2.5")))
    store.insert_order(order("ta", order_type=OrderType.TRAILING_STOP, trail_amount=D("1.75")))
    got = {o.client_order_id: o for o in store.list_orders()}
    assert (got["st"].order_type, got["st"].stop_price, got["st"].time_in_force) == (OrderType.STOP, D("105.25"), TimeInForce.GTC)
    assert (got["sl"].stop_price, got["sl"].limit_price) == (D("95"), D("94.5"))
    assert (got["tp"].trail_percent, got["tp"].trail_amount, got["tp"].stop_price) == (D("2.5"), None, None)
    assert (got["ta"].trail_amount, got["ta"].trail_percent) == (D("1.75"), None)
    assert got["st"].to_request().stop_price == D("105.25") and got["tp"].to_request().trail_percent == D("2.5")


def test_revision_0005_upgrades_a_0004_store_with_its_orders(store_url) -> None:
    s = OpsStore(store_url)
    s.insert_order(order("old", order_type=OrderType.LIMIT, limit_price=D("99.5")))
    with s.transaction() as conn:
        assert migrations.downgrade(conn, "0004_denied_status") == "0004_denied_status"
        cols = {c["name"] for c in sa.inspect(conn).get_columns("orders")}
        paper_cols = {c["name"] for c in sa.inspect(conn).get_columns("paper_orders")}
    assert "stop_price" not in cols and "trail_mark" not in paper_cols  # really a 0004 database
    s.close()
    s = OpsStore(store_url)  # opening applies 0005
    assert s.schema_revision() == HEAD
    old = s.get_order("old")
    assert (old.limit_price, old.stop_price, old.trail_percent, old.trail_amount) == (D("99.5"), None, None, None)
    s.insert_order(order("new", order_type=OrderType.STOP, stop_price=D("101")))
    assert s.get_order("new").stop_price == D("101")
    with s.reading() as conn:
        paper_cols = {c["name"] for c in sa.inspect(conn).get_columns("paper_orders")}
    assert {"stop_price", "trail_percent", "trail_amount", "trail_mark", "current_stop", "triggered_at"} <= paper_cols
    s.close()

