"""Modifying a working order (issue 14): term check, risk on the new terms, the ops store's
``modified`` event, the paper book changed with it, and every refusal leaving both unchanged.
On SQLite and Postgres (the ``store`` fixture)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from trading_pipeline.trading.brokers.base import (
    BrokerError,
    ModifyNotSupported,
    refuse_stop_modify,
)
from trading_pipeline.trading.execution import UnknownOrder, modify_order, submit_order
from trading_pipeline.trading.model import (
    InvalidOrder,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from trading_pipeline.trading.orders import IllegalTransition
from trading_pipeline.trading.risk import RiskEngine
from trading_pipeline.trading.store.schema import order_events, orders, paper_orders

from .conftest import T0, daily_bars

D = Decimal
PRICES = {"AAA": D(100)}


def snapshot(store) -> tuple:
    """Everything a modify may touch: our orders and events, the paper book."""
    with store.reading() as conn:
        return tuple(
            sorted((tuple(r) for r in conn.execute(sa.select(t)).all()), key=repr)
            for t in (orders, order_events, paper_orders)
        )


def place(store, broker, risk_engine, coid: str, otype: OrderType = OrderType.LIMIT, side: Side = Side.BUY,
          qty: str = "10", **terms) -> None:
    if otype == OrderType.LIMIT and not terms:
        terms = {"limit_price": D(90)}
    req = OrderRequest(coid, "acct", "AAA", side, D(qty), otype, terms.pop("limit_price", None), TimeInForce.GTC, **terms)
    assert submit_order(req, broker=broker, store=store, risk_engine=risk_engine, prices=PRICES).action == "submitted"


def modify(store, broker, risk_engine, coid: str, **terms):
    return modify_order(coid, broker=broker, store=store, risk_engine=risk_engine, prices=PRICES, **terms)


def paper_row(store, coid: str):
    with store.reading() as conn:
        return conn.execute(sa.select(paper_orders).where(paper_orders.c.client_order_id == coid)).one()


def test_modify_changes_the_order_the_event_log_and_the_paper_book(store, broker, risk_engine) -> None:
    place(store, broker, risk_engine, "l")
    result = modify(store, broker, risk_engine, "l", quantity=D(12), limit_price=D(95))
    assert result.action == "modified"
    o = store.get_order("l")
    assert (o.quantity, o.limit_price, o.status) == (D(12), D(95), OrderStatus.ACCEPTED)
    last = store.order_events("l")[-1]
    assert last.kind == "modified"
    assert "quantity 10 -> 12" in last.reason and "limit_price 90 -> 95" in last.reason
    row = paper_row(store, "l")
    assert (row.quantity, row.limit_price) == (D(12), D(95))
    # the WebSocket feed tails this log: the modification is in it with the order as it is now
    (_id, ev, now) = store.order_event_log()[-1]
    assert ev.kind == "modified" and now.limit_price == D(95)


def test_paper_fills_at_the_modified_price_from_the_next_bar(store, broker, feed, risk_engine, clock) -> None:
    place(store, broker, risk_engine, "l")
    # day 1 trades down to 96: the old limit 90 does not fill
    feed.append(daily_bars("AAA", [(99, 100, 96, 97)], start=T0 + timedelta(days=1)))
    broker.process_bars()
    assert broker.order_status("l").status == OrderStatus.ACCEPTED
    clock.now = T0 + timedelta(days=1, hours=22)
    modify(store, broker, risk_engine, "l", limit_price=D(97), quantity=D(7))
    broker.process_bars()  # day 1 (before the modification) is not replayed against the new limit
    assert broker.order_status("l").status == OrderStatus.ACCEPTED
    feed.append(daily_bars("AAA", [(99, 100, 95, 96)], start=T0 + timedelta(days=2)))
    broker.process_bars()
    bo = broker.order_status("l")
    assert (bo.status, bo.avg_fill_price, bo.filled_quantity) == (OrderStatus.FILLED, D(97), D(7))


def test_modify_a_stop_and_a_trailing_stop(store, broker, feed, risk_engine) -> None:
    place(store, broker, risk_engine, "s", OrderType.STOP, Side.SELL, stop_price=D(95))
    modify(store, broker, risk_engine, "s", stop_price=D(92))
    assert store.get_order("s").stop_price == D(92) and paper_row(store, "s").stop_price == D(92)
    place(store, broker, risk_engine, "t", OrderType.TRAILING_STOP, Side.SELL, trail_percent=D(5))
    modify(store, broker, risk_engine, "t", trail_amount=D(3))
    o, row = store.get_order("t"), paper_row(store, "t")
    assert (o.trail_percent, o.trail_amount) == (None, D(3))
    assert (row.trail_percent, row.trail_amount) == (None, D(3))
    # day 1 opens at 100 and trades to 96.5: below 100 - 3, so the new trail fills at its stop (97)
    feed.append(daily_bars("AAA", [(100, 100, 96.5, 97)], start=T0 + timedelta(days=1)))
    broker.process_bars()
    assert broker.order_status("t").avg_fill_price == D(97)
    assert broker.order_status("s").status == OrderStatus.ACCEPTED  # 92 not reached


def test_refusals_change_nothing(store, broker, feed, risk_engine) -> None:
    place(store, broker, risk_engine, "l")
    place(store, broker, risk_engine, "m", OrderType.MARKET, limit_price=None)
    place(store, broker, risk_engine, "s", OrderType.STOP, Side.SELL, stop_price=D(95))
    cancelled = "c"
    place(store, broker, risk_engine, cancelled)
    from trading_pipeline.trading.execution import cancel_order

    cancel_order(cancelled, broker=broker, store=store)
    before = snapshot(store)
    cases = [
        ("nope", {"quantity": D(1)}, UnknownOrder, "no order"),
        (cancelled, {"quantity": D(11)}, IllegalTransition, "cannot modify, it is cancelled"),
        ("m", {"limit_price": D(99)}, InvalidOrder, "market order has no limit_price"),
        ("l", {"stop_price": D(99)}, InvalidOrder, "limit order has no stop_price"),
        ("l", {"trail_percent": D(1)}, InvalidOrder, "no trail_percent"),
        ("s", {"stop_price": D(101)}, InvalidOrder, "sell stop must be below the market"),
        ("l", {"limit_price": D(90)}, InvalidOrder, "nothing to modify"),
    ]
    for coid, terms, exc, text in cases:
        with pytest.raises(exc, match=text):
            modify(store, broker, risk_engine, coid, **terms)
        assert snapshot(store) == before, (coid, terms)


def test_quantity_at_or_below_the_filled_part_is_refused(store, broker, risk_engine) -> None:
    place(store, broker, risk_engine, "p", qty="10")
    # a partial fill reported by a broker (the paper broker fills whole orders)
    store.update_order("p", lambda o, _c: [o.apply_fill(D(4), D(90))])
    before = snapshot(store)
    for q in (D(3), D(4)):
        with pytest.raises(IllegalTransition, match="must exceed the filled 4"):
            modify(store, broker, risk_engine, "p", quantity=q)
        assert snapshot(store) == before
    modify(store, broker, risk_engine, "p", quantity=D(5))
    assert store.get_order("p").quantity == D(5)


def test_a_risk_denial_leaves_the_order_and_records_the_rule(store, broker, risk_engine, loose_limits) -> None:
    place(store, broker, risk_engine, "l")  # 10 @ 90 = 900
    tight = RiskEngine(loose_limits.model_copy(update={"max_order_notional": D(2000)}), store)
    before = snapshot(store)
    result = modify(store, broker, tight, "l", quantity=D(30))  # 30 @ 90 = 2700
    assert result.action == "denied" and result.reason.startswith("max_order_notional:")
    assert snapshot(store) == before
    assert [e.rule for e in store.list_risk_events(account="acct")] == ["max_order_notional"]
    # within the limit with the new terms: its own old terms do not count against it
    assert modify(store, broker, tight, "l", quantity=D(20)).action == "modified"  # 1800


def test_the_modified_order_is_not_counted_twice(store, broker, risk_engine, loose_limits) -> None:
    place(store, broker, risk_engine, "l")
    one_order = RiskEngine(loose_limits.model_copy(update={"max_open_orders": 1}), store)
    assert modify(store, broker, one_order, "l", limit_price=D(91)).action == "modified"


def test_a_paper_refusal_rolls_back_the_ops_store_too(store, broker, feed, risk_engine) -> None:
    place(store, broker, risk_engine, "l", limit_price=D(99))
    feed.append(daily_bars("AAA", [(99, 100, 95, 96)], start=T0 + timedelta(days=1)))
    broker.process_bars()  # filled at the broker; the ops store has not synced it yet
    before = snapshot(store)
    with pytest.raises(BrokerError, match="order is filled"):
        modify(store, broker, risk_engine, "l", quantity=D(12))
    assert snapshot(store) == before


def test_a_broker_without_stop_modify_refuses_stop_and_trail_changes_clearly() -> None:
    """For brokers that replace only quantity and limit (Alpaca and IB replace stops and trails:
    tests/trading/brokers/test_live_modify_stops.py)."""
    refuse_stop_modify("other", None, None, None)  # quantity/limit only: fine
    with pytest.raises(ModifyNotSupported, match="not supported by this broker"):
        refuse_stop_modify("other", D(1), None, None)
    with pytest.raises(ModifyNotSupported, match=r"\(other\) yet"):
        refuse_stop_modify("other", None, None, D(1))


class LiveLike:
    """A broker that is not the paper book in this store (as Alpaca or IB) and cannot replace
    stops: the modify goes to it first, and its refusal leaves the store as it was."""

    name = "live"

    def __init__(self, paper) -> None:
        self.paper = paper

    def __getattr__(self, item):
        return getattr(self.paper, item)

    def modify(self, client_order_id, *, stop_price=None, trail_percent=None, trail_amount=None, **terms):
        refuse_stop_modify(self.name, stop_price, trail_percent, trail_amount)
        return self.paper.modify(client_order_id, **terms)


def test_a_live_broker_is_asked_first_and_its_refusal_changes_nothing(store, broker, risk_engine) -> None:
    place(store, broker, risk_engine, "s", OrderType.STOP, Side.SELL, stop_price=D(95))
    live = LiveLike(broker)
    before = snapshot(store)
    with pytest.raises(ModifyNotSupported, match="not supported by this broker"):
        modify(store, live, risk_engine, "s", stop_price=D(94))
    assert snapshot(store) == before
    assert modify(store, live, risk_engine, "s", quantity=D(12)).action == "modified"
    assert store.get_order("s").quantity == D(12) and paper_row(store, "s").quantity == D(12)
