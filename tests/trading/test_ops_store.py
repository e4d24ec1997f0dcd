"""The ops store on a real SQLite file and a real Postgres database (the ``store_url``
fixture runs each test on both): schema, orders and history, fills, and two writers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from trading_pipeline.trading.brokers.base import BrokerFill, BrokerOrder
from trading_pipeline.trading.model import OrderStatus, Side
from trading_pipeline.trading.orders import Order
from trading_pipeline.trading.store import MIGRATIONS, OpsStore

D = Decimal
T = datetime(2024, 3, 4, 15)


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
    assert s1.schema_version() == len(MIGRATIONS) == max(m.version for m in MIGRATIONS)
    s2 = OpsStore(store_url)  # reopening applies nothing twice
    with s2.reading() as conn:
        versions = conn.execute(sa.text("SELECT version FROM schema_version ORDER BY version")).scalars().all()
        if s2.is_sqlite:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
            assert mode == "wal" and timeout >= 30000
        else:
            assert conn.dialect.name == "postgresql"
    assert versions == [m.version for m in MIGRATIONS]
    assert set(sa.inspect(s2.engine).get_table_names()) >= {
        "orders", "order_events", "fills", "positions", "accounts", "risk_events",
        "alert_cursors", "kill_switch", "api_keys", "paper_orders", "paper_fills",
    }
    s1.close()
    s2.close()


def _store_of_release_3(url: str) -> None:
    """An ops store as the release before ``denied`` left it: migrations 1-3 applied, a risk
    denial stored as ``rejected`` (reason "risk rule ...", no broker id) beside a broker refusal."""
    from trading_pipeline.trading.store.schema import order_events, orders, schema_version

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        schema_version.create(conn)
        for m in MIGRATIONS[:3]:
            m.apply(conn)
            conn.execute(schema_version.insert().values(version=m.version, description=m.description, applied_at=T))
        for coid, reason, broker_id in [("risk-1", "risk rule max_order_notional: 9,000 > 5,000", None),
                                        ("broker-1", "broker refused: unknown symbol", None),
                                        ("broker-2", "broker rejected: halted", "b-2")]:
            conn.execute(orders.insert().values(
                client_order_id=coid, account="acct", strategy="manual", symbol="AAA", side="buy",
                order_type="market", quantity=D(10), time_in_force="day", status="rejected", filled_quantity=D(0),
                broker_order_id=broker_id, reason=reason, cancel_requested=False, created_at=T, updated_at=T))
            conn.execute(order_events.insert().values(
                client_order_id=coid, ts=T, kind="transition", from_status="new", to_status="rejected", reason=reason))
    engine.dispose()


def test_a_store_of_the_previous_release_upgrades_in_place(store_url) -> None:
    _store_of_release_3(store_url)
    s = OpsStore(store_url)
    assert s.schema_version() == max(m.version for m in MIGRATIONS)
    assert {o.client_order_id: o.status for o in s.list_orders()} == {
        "risk-1": OrderStatus.DENIED, "broker-1": OrderStatus.REJECTED, "broker-2": OrderStatus.REJECTED,
    }
    assert [e.to_status for e in s.order_events("risk-1")] == [OrderStatus.DENIED]
    assert [e.to_status for e in s.order_events("broker-1")] == [OrderStatus.REJECTED]
    assert s.count_orders_since("acct", T) == 2  # the two the brokers saw
    s.close()


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
    assert store.schema_version() == len(MIGRATIONS)
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
