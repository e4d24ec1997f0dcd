"""Brackets (issue 14): an entry with a take-profit limit and a stop-loss stop, linked as
one-cancels-other, held until the entry fills; validation before anything is stored; the risk
view of the exits; revision 0006. On SQLite and Postgres (the ``store`` fixture)."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from trading_pipeline.trading.brokers.base import BracketNotSupported
from trading_pipeline.trading.execution import (
    InvalidBracket,
    cancel_order,
    submit_bracket,
    sync_open_orders,
)
from trading_pipeline.trading.model import (
    InvalidOrder,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from trading_pipeline.trading.risk import RiskContext
from trading_pipeline.trading.store import OpsStore, migrations
from trading_pipeline.trading.store.schema import order_events, orders, paper_fills, paper_orders

from .conftest import T0, daily_bars

D = Decimal
PRICES = {"AAA": D(100)}


def bracket(store, broker, risk_engine, coid="br", side=Side.BUY, tp="110", sl="90", otype=OrderType.MARKET,
            limit=None, tif=TimeInForce.DAY):
    req = OrderRequest(coid, "acct", "AAA", side, D(10), otype, None if limit is None else D(limit), tif)
    return submit_bracket(req, take_profit_price=None if tp is None else D(tp), stop_loss_price=None if sl is None else D(sl),
                          broker=broker, store=store, risk_engine=risk_engine, prices=PRICES)


def step(store, broker, feed, *rows, start_day=1):
    from datetime import timedelta

    feed.append(daily_bars("AAA", list(rows), start=T0 + timedelta(days=start_day)))
    broker.process_bars()
    sync_open_orders(store, broker)


def statuses(store) -> dict[str, OrderStatus]:
    return {o.client_order_id: o.status for o in store.list_orders()}


def paper_statuses(store) -> dict[str, str]:
    with store.reading() as conn:
        return {r.client_order_id: r.status for r in conn.execute(sa.select(paper_orders)).all()}


def fills(store) -> dict[str, tuple[Decimal, object]]:
    with store.reading() as conn:
        return {r.client_order_id: (r.price, r.bar_ts) for r in conn.execute(sa.select(paper_fills)).all()}


def test_a_bracket_stores_the_entry_and_two_linked_exits(store, broker, risk_engine) -> None:
    res = bracket(store, broker, risk_engine)
    assert res.entry.action == "submitted"
    tp, sl = res.children
    assert (tp.client_order_id, tp.order_type, tp.limit_price, tp.side, tp.quantity) == ("br-tp", OrderType.LIMIT, D(110), Side.SELL, D(10))
    assert (sl.client_order_id, sl.order_type, sl.stop_price, sl.side, sl.quantity) == ("br-sl", OrderType.STOP, D(90), Side.SELL, D(10))
    assert tp.parent_client_order_id == sl.parent_client_order_id == "br"
    assert tp.oco_group == sl.oco_group == "br-oco"
    assert tp.time_in_force == sl.time_in_force == TimeInForce.GTC
    assert statuses(store) == {"br": OrderStatus.ACCEPTED, "br-tp": OrderStatus.ACCEPTED, "br-sl": OrderStatus.ACCEPTED}
    assert {o.client_order_id for o in store.list_orders(parent="br")} == {"br-tp", "br-sl"}
    with store.reading() as conn:
        created = {r.client_order_id: r.reason for r in conn.execute(sa.select(order_events).where(order_events.c.kind == "created"))}
        paper = {r.client_order_id: (r.parent_client_order_id, r.oco_group) for r in conn.execute(sa.select(paper_orders))}
    assert "bracket exit of br (oco group br-oco)" in created["br-tp"] and "br-oco" in created["br-sl"]
    assert paper == {"br": (None, None), "br-tp": ("br", "br-oco"), "br-sl": ("br", "br-oco")}
    # a replay returns the same three orders, nothing new
    again = bracket(store, broker, risk_engine)
    assert again.entry.action == "skipped" and [c.client_order_id for c in again.children] == ["br-tp", "br-sl"]
    assert len(store.list_orders()) == 3


def test_entry_fills_then_take_profit_fills_and_stop_loss_is_cancelled(store, broker, feed, risk_engine) -> None:
    bracket(store, broker, risk_engine)
    step(store, broker, feed, (100, 102, 99, 101))  # the entry fills at the open; exits untouched
    assert statuses(store) == {"br": OrderStatus.FILLED, "br-tp": OrderStatus.ACCEPTED, "br-sl": OrderStatus.ACCEPTED}
    step(store, broker, feed, (105, 111, 104, 110), start_day=2)
    assert statuses(store) == {"br": OrderStatus.FILLED, "br-tp": OrderStatus.FILLED, "br-sl": OrderStatus.CANCELLED}
    assert fills(store)["br-tp"][0] == D(110)
    assert "one-cancels-other: br-tp filled" in store.get_order("br-sl").reason
    assert store.portfolio("acct").open_positions() == []  # the exit closed the position


def test_entry_fills_then_stop_loss_fills_and_take_profit_is_cancelled(store, broker, feed, risk_engine) -> None:
    bracket(store, broker, risk_engine)
    step(store, broker, feed, (100, 102, 99, 101), (95, 96, 88, 89))  # the stop triggers on day 2
    assert statuses(store) == {"br": OrderStatus.FILLED, "br-tp": OrderStatus.CANCELLED, "br-sl": OrderStatus.FILLED}
    assert fills(store)["br-sl"][0] == D(90)
    assert "br-sl filled" in store.get_order("br-tp").reason
    assert store.portfolio("acct").open_positions() == []


def test_when_one_bar_could_fill_both_exits_the_stop_loss_fills(store, broker, feed, risk_engine) -> None:
    bracket(store, broker, risk_engine)
    step(store, broker, feed, (100, 102, 99, 101), (100, 112, 88, 100))
    assert statuses(store)["br-sl"] == OrderStatus.FILLED and statuses(store)["br-tp"] == OrderStatus.CANCELLED
    assert fills(store)["br-sl"][0] == D(90) and "br-tp" not in fills(store)


def test_an_exit_never_fills_before_the_entry(store, broker, feed, risk_engine) -> None:
    # a buy limit at 95 that never fills while the market trades through both exits
    bracket(store, broker, risk_engine, otype=OrderType.LIMIT, limit="95", tp="105", sl="92", tif=TimeInForce.GTC)
    step(store, broker, feed, (100, 112, 96, 100), (100, 106, 96, 101))
    assert statuses(store) == {"br": OrderStatus.ACCEPTED, "br-tp": OrderStatus.ACCEPTED, "br-sl": OrderStatus.ACCEPTED}
    assert fills(store) == {}
    # nor on the bar the entry fills on (it trades through the take-profit too): from the next bar on
    step(store, broker, feed, (97, 108, 94, 100), start_day=3)
    assert statuses(store) == {"br": OrderStatus.FILLED, "br-tp": OrderStatus.ACCEPTED, "br-sl": OrderStatus.ACCEPTED}
    assert set(fills(store)) == {"br"}
    step(store, broker, feed, (101, 106, 100, 105), start_day=4)
    assert statuses(store)["br-tp"] == OrderStatus.FILLED and statuses(store)["br-sl"] == OrderStatus.CANCELLED


def test_cancelling_the_entry_cancels_both_exits(store, broker, feed, risk_engine) -> None:
    bracket(store, broker, risk_engine, otype=OrderType.LIMIT, limit="95", tp="105", sl="92", tif=TimeInForce.GTC)
    cancel_order("br", broker=broker, store=store)
    assert statuses(store) == {"br": OrderStatus.CANCELLED, "br-tp": OrderStatus.CANCELLED, "br-sl": OrderStatus.CANCELLED}
    assert paper_statuses(store) == {"br": "cancelled", "br-tp": "cancelled", "br-sl": "cancelled"}
    step(store, broker, feed, (94, 110, 80, 100))  # nothing of the bracket fills later
    assert fills(store) == {}


def test_an_entry_that_expires_takes_its_exits_with_it(store, broker, feed, risk_engine) -> None:
    bracket(store, broker, risk_engine, otype=OrderType.LIMIT, limit="95", tp="105", sl="92", tif=TimeInForce.DAY)
    step(store, broker, feed, (100, 106, 96, 100))
    assert statuses(store) == {"br": OrderStatus.EXPIRED, "br-tp": OrderStatus.CANCELLED, "br-sl": OrderStatus.CANCELLED}
    assert "bracket entry br is expired" in store.get_order("br-tp").reason


@pytest.mark.parametrize(
    ("side", "otype", "limit", "tp", "sl", "field"),
    [
        (Side.BUY, OrderType.MARKET, None, "99", "90", "take_profit_price"),  # take-profit below the last close
        (Side.BUY, OrderType.MARKET, None, "110", "100", "stop_loss_price"),  # stop-loss at the last close
        (Side.BUY, OrderType.LIMIT, "95", "110", "96", "stop_loss_price"),  # stop-loss above the limit
        (Side.SELL, OrderType.MARKET, None, "110", "120", "take_profit_price"),  # a sell's take-profit is below
        (Side.SELL, OrderType.MARKET, None, "90", "95", "stop_loss_price"),  # a sell's stop-loss is above
        (Side.BUY, OrderType.MARKET, None, "110", None, "stop_loss_price"),  # both required
        (Side.BUY, OrderType.MARKET, None, None, "90", "take_profit_price"),
        (Side.BUY, OrderType.MARKET, None, "110", "-1", "stop_loss_price"),  # positive
        (Side.BUY, OrderType.STOP, None, "110", "90", "order_type"),  # entries are market or limit
    ],
)
def test_a_bracket_that_does_not_fit_its_entry_is_refused_with_nothing_stored(
    store, broker, risk_engine, side, otype, limit, tp, sl, field
) -> None:
    req = OrderRequest("bad", "acct", "AAA", side, D(10), otype, None if limit is None else D(limit), TimeInForce.DAY,
                       stop_price=D(105) if otype == OrderType.STOP else None)
    with pytest.raises(InvalidBracket) as err:
        submit_bracket(req, take_profit_price=None if tp is None else D(tp), stop_loss_price=None if sl is None else D(sl),
                       broker=broker, store=store, risk_engine=risk_engine, prices=PRICES)
    assert err.value.field == field
    assert store.list_orders() == [] and paper_statuses(store) == {}


def test_a_sell_bracket_mirrors_a_buy(store, broker, feed, risk_engine) -> None:
    res = bracket(store, broker, risk_engine, side=Side.SELL, tp="90", sl="110")
    assert [c.side for c in res.children] == [Side.BUY, Side.BUY]
    step(store, broker, feed, (100, 102, 99, 101), (100, 111, 99, 105))
    assert statuses(store) == {"br": OrderStatus.FILLED, "br-tp": OrderStatus.CANCELLED, "br-sl": OrderStatus.FILLED}


def test_a_broker_without_brackets_refuses_before_anything_is_stored(store, broker, risk_engine, monkeypatch) -> None:
    monkeypatch.setattr(type(broker), "supports_brackets", False)
    with pytest.raises(BracketNotSupported, match="brackets are not supported by this broker"):
        bracket(store, broker, risk_engine)
    assert store.list_orders() == [] and paper_statuses(store) == {}


def test_invalid_entry_terms_are_refused_before_the_bracket(store, broker, risk_engine) -> None:
    with pytest.raises(InvalidOrder):
        bracket(store, broker, risk_engine, otype=OrderType.LIMIT, limit=None)
    assert store.list_orders() == []


def test_risk_holds_the_exits_until_the_entry_fills_then_counts_one(store, broker, feed, risk_engine) -> None:
    bracket(store, broker, risk_engine)
    ctx = RiskContext.from_store(store, "acct", PRICES, record_mark=False)
    assert ctx.positions["AAA"] == D(10)  # the entry counts; its exits are held
    step(store, broker, feed, (100, 102, 99, 101))
    ctx = RiskContext.from_store(store, "acct", PRICES, record_mark=False)
    assert ctx.positions["AAA"] == D(0)  # 10 held, one exit of the oco group working: flat, not short


def test_revision_0006_upgrades_a_0005_store_with_its_orders(store_url) -> None:
    s = OpsStore(store_url)
    s.insert_order(__import__("trading_pipeline.trading.orders", fromlist=["Order"]).Order(
        client_order_id="old", account="acct", symbol="AAA", side=Side.BUY, quantity=D(5)))
    with s.transaction() as conn:
        assert migrations.downgrade(conn, "0005_stop_orders") == "0005_stop_orders"
        cols = {c["name"] for c in sa.inspect(conn).get_columns("orders")}
        paper_cols = {c["name"] for c in sa.inspect(conn).get_columns("paper_orders")}
    assert "parent_client_order_id" not in cols and "oco_group" not in paper_cols  # really a 0005 database
    s.close()
    s = OpsStore(store_url)  # opening applies 0006 (and every later revision)
    assert s.schema_revision() == migrations.head()
    old = s.get_order("old")
    assert (old.quantity, old.parent_client_order_id, old.oco_group) == (D(5), None, None)
    with s.reading() as conn:
        for table in (orders, paper_orders):
            assert {"parent_client_order_id", "oco_group"} <= {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
    s.close()


# ---- the CLI ---------------------------------------------------------------------------------
from .test_orders_cli import cli  # noqa: E402, F401 - the CLI fixture (a real home, GOOG closes at 100)


def test_cli_submits_a_bracket_lists_it_and_refuses_a_bad_one_with_exit_2(cli) -> None:  # noqa: F811
    invoke, settings = cli
    out = invoke("order", "submit", "GOOG", "buy", "3", "--take-profit", "110", "--stop-loss", "95", "--id", "b1", "--json")
    assert out["action"] == "submitted"
    assert [(c["client_order_id"], c["order_type"], c["side"], str(c["quantity"])) for c in out["children"]] == [
        ("b1-tp", "limit", "sell", "3"), ("b1-sl", "stop", "sell", "3")]
    listed = {o["client_order_id"]: o for o in invoke("orders", "--json")}
    assert sorted(listed["b1"]["children"]) == ["b1-sl", "b1-tp"] and listed["b1-tp"]["parent_client_order_id"] == "b1"
    assert "exit b1-sl" in invoke("order", "submit", "GOOG", "buy", "3", "--take-profit", "110", "--stop-loss", "95", "--id", "b1")
    bad = invoke("order", "submit", "GOOG", "buy", "3", "--take-profit", "99", "--stop-loss", "95", "--id", "b2", code=2)
    assert "--take-profit must be above" in bad
    assert "needs both" in invoke("order", "submit", "GOOG", "buy", "3", "--take-profit", "110", "--id", "b3", code=2)
    assert invoke("order", "submit", "GOOG", "buy", "3", "--stop-loss", "-1", "--take-profit", "110", code=2)
    assert set(o["client_order_id"] for o in invoke("orders", "--json")) == {"b1", "b1-tp", "b1-sl"}


def test_alpaca_and_ib_take_brackets_natively_the_paper_broker_per_order() -> None:
    from trading_pipeline.trading.brokers.alpaca import AlpacaBroker
    from trading_pipeline.trading.brokers.base import native_brackets, takes_brackets
    from trading_pipeline.trading.brokers.ib import IBBroker
    from trading_pipeline.trading.brokers.paper import PaperBroker

    assert PaperBroker.supports_brackets is True and native_brackets(PaperBroker) is None
    for live in (AlpacaBroker, IBBroker):  # tests/trading/brokers/test_live_brackets.py runs them
        assert live.supports_brackets is True and takes_brackets(live) and native_brackets(live) is live


def test_a_replay_with_a_bracket_does_not_add_exits_to_a_plain_order(store, broker, risk_engine) -> None:
    from trading_pipeline.trading.execution import submit_order

    plain = OrderRequest("br", "acct", "AAA", Side.BUY, D(10), OrderType.MARKET, None, TimeInForce.DAY)
    assert submit_order(plain, broker=broker, store=store, risk_engine=risk_engine, prices=PRICES).action == "submitted"
    again = bracket(store, broker, risk_engine)
    assert again.entry.action == "skipped" and again.children == ()
    assert [o.client_order_id for o in store.list_orders()] == ["br"]
