"""The order pipeline: idempotent retries, broker failures mid-batch, kill switch, reconcile."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import polars as pl
import pytest
import sqlalchemy as sa

from trading_pipeline.trading.brokers.base import BrokerError, BrokerOrder
from trading_pipeline.trading.brokers.paper import PaperBroker, PolarsBarFeed
from trading_pipeline.trading.decisions import signal_side
from trading_pipeline.trading.execution import (
    cancel_order,
    execute_signals,
    reconcile,
    submit_order,
    sync_open_orders,
)
from trading_pipeline.trading.model import OrderRequest, OrderStatus, OrderType, Side
from trading_pipeline.trading.sizing import Sizing
from trading_pipeline.trading.store.schema import paper_orders

from .conftest import T0, daily_bars

D = Decimal
SYMBOLS = ["AAA", "BBB", "CCC"]
PRICES = {s: D(100) for s in SYMBOLS}


def signals(direction: str = "long", symbols: list[str] = SYMBOLS) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": symbols,
            "timeframe": ["1d"] * len(symbols),
            "ts": [T0] * len(symbols),
            "kind": ["breakout_up"] * len(symbols),
            "direction": [direction] * len(symbols),
            "score": [1.5] * len(symbols),
        }
    )


@pytest.fixture
def feed() -> PolarsBarFeed:
    return PolarsBarFeed(pl.concat([daily_bars(s, [(100, 101, 99, 100)]) for s in SYMBOLS]))


def advance(feed: PolarsBarFeed, day: int, price: float = 101) -> None:
    feed.append(pl.concat([daily_bars(s, [(price, price + 1, price - 1, price)], start=T0 + timedelta(days=day)) for s in SYMBOLS]))


def broker_order_count(store) -> int:
    with store.reading() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(paper_orders)).scalar_one()


def run(broker, store, risk_engine, sigs=None, **kw):
    return execute_signals(
        signals() if sigs is None else sigs, account="acct", strategy="breakout", broker=broker, store=store,
        risk_engine=risk_engine, sizing=Sizing(fraction=D("0.1")), prices=PRICES, **kw,
    )


class FlakyBroker:
    """The real paper broker, with one submit failing: before it reaches the broker, or after
    the broker took it but before we heard back (a lost acknowledgement)."""

    def __init__(self, inner: PaperBroker, fail_on: int, after_submit: bool = False) -> None:
        self.inner, self.fail_on, self.after_submit, self.calls = inner, fail_on, after_submit, 0
        self.name = inner.name

    def submit(self, order: OrderRequest) -> BrokerOrder:
        self.calls += 1
        if self.calls == self.fail_on:
            if self.after_submit:
                self.inner.submit(order)
            raise BrokerError("connection reset by peer", retryable=True)
        return self.inner.submit(order)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_retried_batch_submits_once(broker, store, risk_engine) -> None:
    first = run(broker, store, risk_engine)
    assert [r.action for r in first] == ["submitted"] * 3
    assert {r.status for r in first} == {OrderStatus.ACCEPTED}
    second = run(broker, store, risk_engine)
    assert [r.action for r in second] == ["skipped"] * 3
    assert [r.client_order_id for r in second] == [r.client_order_id for r in first]
    assert broker_order_count(store) == 3
    assert len(store.list_orders()) == 3
    o = store.get_order(first[0].client_order_id)
    assert o.quantity == D(100) and o.strategy == "breakout" and o.signal_ts == T0  # 10% of 100k at 100


@pytest.mark.parametrize("after_submit", [False, True], ids=["before-broker", "lost-ack"])
def test_broker_error_mid_batch_loses_no_state_and_rerun_completes(broker, store, risk_engine, after_submit) -> None:
    flaky = FlakyBroker(broker, fail_on=2, after_submit=after_submit)
    first = run(flaky, store, risk_engine)
    assert [r.action for r in first] == ["submitted", "error", "submitted"]
    failed = store.get_order(first[1].client_order_id)
    assert failed is not None and failed.status == OrderStatus.NEW  # recorded before the call
    assert "connection reset by peer" in failed.reason
    assert [e.kind for e in store.order_events(failed.client_order_id)] == ["created", "note"]

    second = run(flaky, store, risk_engine)  # the re-run picks it up
    assert [r.action for r in second] == ["skipped", "resumed" if after_submit else "submitted", "skipped"]
    assert {store.get_order(r.client_order_id).status for r in second} == {OrderStatus.ACCEPTED}
    assert broker_order_count(store) == 3  # nothing went to the broker twice
    assert reconcile(store, broker) == []


def test_non_retryable_broker_error_rejects_with_reason(broker, store, risk_engine) -> None:
    class Refusing(FlakyBroker):
        def submit(self, order):
            raise BrokerError("insufficient buying power", retryable=False)

    res = run(Refusing(broker, fail_on=0), store, risk_engine, sigs=signals(symbols=["AAA"]))
    o = store.get_order(res[0].client_order_id)
    assert o.status == OrderStatus.REJECTED and "insufficient buying power" in o.reason


def test_kill_switch_blocks_everything(broker, store, risk_engine) -> None:
    store.set_kill_switch(True, reason="test halt", updated_by="pytest")
    res = run(broker, store, risk_engine)
    assert [r.action for r in res] == ["denied"] * 3
    assert all("kill_switch" in r.reason for r in res)
    assert broker_order_count(store) == 0
    assert {o.status for o in store.list_orders()} == {OrderStatus.DENIED}
    assert [e.rule for e in store.list_risk_events()] == ["kill_switch"] * 3
    manual = OrderRequest("manual-1", "acct", "AAA", Side.BUY, D(1))
    r = submit_order(manual, broker=broker, store=store, risk_engine=risk_engine, prices=PRICES)
    assert r.action == "denied" and broker_order_count(store) == 0


def test_kill_switch_also_holds_back_recorded_orders(broker, store, risk_engine) -> None:
    run(FlakyBroker(broker, fail_on=1), store, risk_engine, sigs=signals(symbols=["AAA"]))
    store.set_kill_switch(True, reason="halt")
    res = run(broker, store, risk_engine, sigs=signals(symbols=["AAA"]))
    assert res[0].action == "denied" and res[0].status == OrderStatus.NEW
    assert broker_order_count(store) == 0


def test_risk_rejection_is_recorded_on_the_order(broker, store, loose_limits) -> None:
    from trading_pipeline.trading.risk import RiskEngine

    eng = RiskEngine(loose_limits.model_copy(update={"max_order_notional": D(5000)}), store)
    res = run(broker, store, eng, sigs=signals(symbols=["AAA"]))
    o = store.get_order(res[0].client_order_id)
    assert o.status == OrderStatus.DENIED and o.reason.startswith("risk rule max_order_notional")
    assert store.list_risk_events()[0].client_order_id == o.client_order_id
    assert broker_order_count(store) == 0


def test_buying_power_holds_a_batch_of_signal_buys_to_the_cash(store, feed, clock, loose_limits) -> None:
    """Each order is 40% of equity, under every per-order limit; together the third would
    spend more than the cash: working buys and the broker's commission count."""
    from trading_pipeline.trading.risk import RiskEngine

    broker = PaperBroker(store, feed, account="acct", starting_cash=D(100000), clock=clock,
                         commission_per_share=D("0.01"), commission_min=D(1))
    eng = RiskEngine(loose_limits, store)
    res = execute_signals(signals(), account="acct", strategy="breakout", broker=broker, store=store, risk_engine=eng,
                          sizing=Sizing(fraction=D("0.4"), max_fraction=D("0.4")), prices=PRICES)
    assert [(r.symbol, r.action) for r in res] == [("AAA", "submitted"), ("BBB", "submitted"), ("CCC", "denied")]
    ev = store.list_risk_events()[0]
    # 2 working buys of 400 x 100 + 4 commission each, and this one: 120,012 reaches the cash
    assert (ev.rule, ev.symbol, ev.value, ev.limit_value) == ("buying_power", "CCC", D(120012), D(100000))
    assert "held by working orders" in ev.reason
    assert store.get_order(res[2].client_order_id).reason.startswith("risk rule buying_power")
    assert broker_order_count(store) == 2


def test_fills_flow_into_positions_and_sell_signal_exits(broker, store, risk_engine, feed, clock) -> None:
    run(broker, store, risk_engine)
    advance(feed, 1, price=101)
    broker.process_bars()
    changed = sync_open_orders(store, broker)
    assert {o.status for o in changed} == {OrderStatus.FILLED}
    pf = store.portfolio("acct")
    assert {s: pf.quantity(s) for s in SYMBOLS} == {s: D(100) for s in SYMBOLS}
    assert reconcile(store, broker) == []

    sell = signals("short", ["AAA", "ZZZ"]).with_columns(pl.lit(T0 + timedelta(days=1)).alias("ts"))
    clock.now = T0 + timedelta(days=1, hours=22)
    res = run(broker, store, risk_engine, sigs=sell)
    by_symbol = {r.symbol: r for r in res}
    assert by_symbol["AAA"].action == "submitted"
    assert by_symbol["ZZZ"].action == "skipped" and "no long position" in by_symbol["ZZZ"].reason
    advance(feed, 2, price=110)
    broker.process_bars()
    sync_open_orders(store, broker)
    pf = store.portfolio("acct")
    assert pf.quantity("AAA") == 0 and pf.positions["AAA"].realized_pnl == D(900)
    assert reconcile(store, broker) == []


def test_reconcile_reports_disagreements(broker, store, risk_engine, feed) -> None:
    run(broker, store, risk_engine, sigs=signals(symbols=["AAA"]))
    broker.submit(OrderRequest("rogue", "acct", "BBB", Side.BUY, D(5)))  # behind the store's back
    mism = reconcile(store, broker)
    assert [(m.kind, m.key) for m in mism] == [("order_unknown_to_store", "rogue")]
    advance(feed, 1)
    broker.process_bars()  # fills happen at the broker; the store has not synced yet
    kinds = {(m.kind, m.key) for m in reconcile(store, broker)}
    assert ("position", "AAA") in kinds and ("position", "BBB") in kinds
    assert any(k == "order_status" for k, _ in kinds)
    sync_open_orders(store, broker)
    assert [(m.kind, m.key) for m in reconcile(store, broker)] == [("position", "BBB")]


def test_manual_limit_order_and_cancel(broker, store, risk_engine) -> None:
    req = OrderRequest("manual-l", "acct", "AAA", Side.BUY, D(5), OrderType.LIMIT, D(99))
    r = submit_order(req, broker=broker, store=store, risk_engine=risk_engine, prices=PRICES)
    assert r.action == "submitted" and r.status == OrderStatus.ACCEPTED
    again = submit_order(req, broker=broker, store=store, risk_engine=risk_engine, prices=PRICES)
    assert again.action == "skipped"
    o = cancel_order("manual-l", broker=broker, store=store)
    assert o.status == OrderStatus.CANCELLED and o.cancel_requested
    assert broker.order_status("manual-l").status == OrderStatus.CANCELLED
    kinds = [e.kind for e in store.order_events("manual-l")]
    assert kinds == ["created", "transition", "cancel_request", "transition"]


def test_signal_side_mapping() -> None:
    assert signal_side("long") == signal_side("UP") == signal_side(1) == Side.BUY
    assert signal_side("short") == signal_side("down") == signal_side(-1.0) == Side.SELL
    with pytest.raises(ValueError, match="unknown signal direction"):
        signal_side("sideways")
    with pytest.raises(ValueError):
        execute_signals(pl.DataFrame({"symbol": ["A"]}), account="a", strategy="s", broker=None, store=None,
                        risk_engine=None, sizing=Sizing(), prices={})
