"""Signal orders with ATR brackets (DecisionRules.stop_loss_atr / take_profit_atr): the live order
job places the entry with a take-profit and a stop-loss exit on the paper broker (Alpaca and IB take
the same bracket natively: tests/trading/brokers/test_live_brackets.py); a signal with no ATR gets a
plain entry and says why; a broker without brackets gets nothing. The rules come from
TRADING_STOP_LOSS_ATR / TRADING_TAKE_PROFIT_ATR."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import polars as pl
import pytest

from tests.trading.conftest import T0, daily_bars
from trading_pipeline.trading.brokers.paper import PaperBroker
from trading_pipeline.trading.decisions import DecisionRules
from trading_pipeline.trading.execution import execute_signals, sync_open_orders
from trading_pipeline.trading.model import OrderStatus, OrderType, Side, TimeInForce
from trading_pipeline.trading.orders import client_order_id
from trading_pipeline.trading.sizing import Sizing

D = Decimal
RULES = DecisionRules(stop_loss_atr=D("1.5"), take_profit_atr=D(3))
PRICES = {"AAA": D(100)}  # the signal bar's close (the feed's first bar)


def signals(atr: float | None, direction: str = "long", ts=T0) -> pl.DataFrame:
    return pl.DataFrame(
        {"symbol": ["AAA"], "timeframe": ["1d"], "ts": [ts], "kind": ["breakout_up" if direction == "long" else "breakout_down"],
         "direction": [direction], "score": [1.0], "atr_14": [atr]},
        schema_overrides={"ts": pl.Datetime("us"), "atr_14": pl.Float64},
    )


def run(frame: pl.DataFrame, broker, store, risk_engine, rules: DecisionRules = RULES, prices=PRICES):
    return execute_signals(frame, account="acct", strategy="breakout_daily", broker=broker, store=store,
                           risk_engine=risk_engine, sizing=Sizing(), prices=prices, rules=rules)


def test_an_entry_gets_its_atr_bracket_and_the_stop_works(broker, store, feed, clock, risk_engine) -> None:
    [res] = run(signals(2.0), broker, store, risk_engine)
    coid = client_order_id("breakout_daily", "acct", "AAA", T0, Side.BUY)
    assert (res.action, res.client_order_id, res.signal_ts) == ("submitted", coid, T0)
    entry = store.get_order(coid)
    assert (entry.side, entry.quantity, entry.order_type) == (Side.BUY, D(100), OrderType.MARKET)  # 10% of 100k at 100
    assert (entry.signal_ts, entry.strategy) == (T0, "breakout_daily")
    tp, sl = store.get_order(f"{coid}-tp"), store.get_order(f"{coid}-sl")
    # close 100, ATR 2: stop 100 - 1.5 x 2 = 97, take-profit 100 + 3 x 2 = 106
    assert (tp.order_type, tp.limit_price, tp.stop_price) == (OrderType.LIMIT, D(106), None)
    assert (sl.order_type, sl.stop_price, sl.limit_price) == (OrderType.STOP, D(97), None)
    for child in (tp, sl):
        assert (child.side, child.quantity, child.time_in_force) == (Side.SELL, D(100), TimeInForce.GTC)
        assert (child.parent_client_order_id, child.oco_group, child.status) == (coid, f"{coid}-oco", OrderStatus.ACCEPTED)
    assert "97" in res.reason and "106" in res.reason

    # a later signal for AAA while the exits work: the bracket manages the position
    [again] = run(signals(2.0, direction="short", ts=T0 + timedelta(days=1)), broker, store, risk_engine)
    assert again.action == "skipped" and "still working" in again.reason

    # the market: the entry fills at the next open (100.5), the bar after trades down through 97
    feed.append(daily_bars("AAA", [(100.5, 101.0, 99.0, 100.0), (99.0, 99.5, 96.0, 96.5)], start=T0 + timedelta(days=1)))
    clock.now = T0 + timedelta(days=2, hours=22)
    broker.process_bars()
    sync_open_orders(store, broker, "acct")
    assert store.get_order(coid).avg_fill_price == D("100.5")
    assert store.get_order(f"{coid}-sl").status == OrderStatus.FILLED
    assert store.get_order(f"{coid}-sl").avg_fill_price == D(97)
    assert store.get_order(f"{coid}-tp").status == OrderStatus.CANCELLED
    assert store.portfolio("acct").quantity("AAA") == 0


def test_a_short_entry_mirrors_the_bracket(broker, store, risk_engine) -> None:
    [res] = run(signals(2.0, direction="short"), broker, store, risk_engine,
                rules=RULES.model_copy(update={"allow_short": True}))
    coid = client_order_id("breakout_daily", "acct", "AAA", T0, Side.SELL)
    assert res.action == "submitted"
    tp, sl = store.get_order(f"{coid}-tp"), store.get_order(f"{coid}-sl")
    assert (tp.side, tp.limit_price, sl.side, sl.stop_price) == (Side.BUY, D(94), Side.BUY, D(103))


def test_no_atr_a_plain_entry_with_the_reason(broker, store, risk_engine) -> None:
    [res] = run(signals(None), broker, store, risk_engine)
    assert res.action == "submitted"
    assert "no usable ATR" in res.reason
    assert store.get_order(res.client_order_id).quantity == D(100)
    assert store.list_orders(parent=res.client_order_id) == []
    assert {o.client_order_id for o in broker.open_orders()} == {res.client_order_id}


def test_without_exit_rules_no_bracket_and_no_note(broker, store, risk_engine) -> None:
    [res] = run(signals(2.0), broker, store, risk_engine, rules=DecisionRules())
    assert res.action == "submitted" and "bracket" not in res.reason
    assert store.list_orders(parent=res.client_order_id) == []


class NoBracketBroker(PaperBroker):
    """A broker that takes no brackets (as the Alpaca and IB adapters, for now): the real paper
    broker with its bracket support switched off."""

    supports_brackets = False


@pytest.fixture
def no_bracket_broker(store, feed, clock) -> NoBracketBroker:
    return NoBracketBroker(store, feed, account="acct", starting_cash=D(100_000), clock=clock)


def test_a_broker_without_brackets_gets_no_entry(no_bracket_broker, store, risk_engine) -> None:
    [res] = run(signals(2.0), no_bracket_broker, store, risk_engine)
    assert res.action == "rejected" and res.status is None
    assert "not supported" in res.reason and "not sent" in res.reason
    assert store.get_order(res.client_order_id) is None
    assert no_bracket_broker.open_orders() == []
    # a signal without ATR has no bracket to refuse: its plain entry is sent
    [plain] = run(signals(None, ts=T0 + timedelta(hours=1)), no_bracket_broker, store, risk_engine)
    assert plain.action == "submitted"


def test_rerun_is_idempotent(broker, store, risk_engine) -> None:
    [first] = run(signals(2.0), broker, store, risk_engine)
    [second] = run(signals(2.0), broker, store, risk_engine)
    assert second.action == "skipped" and second.client_order_id == first.client_order_id
    assert len(store.list_orders(account="acct")) == 3  # the entry and its two exits, once


def test_a_rerun_after_a_crash_sends_the_bracket_left_at_new(broker, store, risk_engine) -> None:
    """The state a crash between recording and sending leaves (entry and exits at NEW, the broker
    never called): the re-run of the same signal sends all three, once, linked as a bracket."""
    from trading_pipeline.trading.execution import bracket_children
    from trading_pipeline.trading.model import OrderRequest
    from trading_pipeline.trading.orders import Order

    coid = client_order_id("breakout_daily", "acct", "AAA", T0, Side.BUY)
    entry = OrderRequest(coid, "acct", "AAA", Side.BUY, D(100), OrderType.MARKET, None, TimeInForce.DAY)
    store.ensure_account("acct", D(100_000))
    for req in (*bracket_children(entry, D(106), D(97)), entry):
        store.insert_order(Order.from_request(req, strategy="breakout_daily", signal_ts=None if req is not entry else T0,
                                              broker=broker.name), reason="recorded; then the process died")
    assert broker.open_orders() == []
    [res] = run(signals(2.0), broker, store, risk_engine)
    assert (res.action, res.client_order_id, res.signal_ts) == ("submitted", coid, T0)
    at_broker = {o.client_order_id: o.status for o in broker.open_orders()}
    assert at_broker == {coid: OrderStatus.ACCEPTED, f"{coid}-tp": OrderStatus.ACCEPTED, f"{coid}-sl": OrderStatus.ACCEPTED}
    assert store.get_order(f"{coid}-sl").status == OrderStatus.ACCEPTED
    [again] = run(signals(2.0), broker, store, risk_engine)
    assert again.action == "skipped" and len(broker.open_orders()) == 3


def test_the_exit_rules_come_from_the_settings(tmp_path, monkeypatch) -> None:
    from trading_pipeline.settings import Settings

    monkeypatch.setenv("TRADING_STOP_LOSS_ATR", "1.5")
    monkeypatch.setenv("TRADING_TAKE_PROFIT_ATR", "3")
    assert DecisionRules.from_settings(Settings(home=tmp_path)) == RULES
    monkeypatch.setenv("TRADING_STOP_LOSS_ATR", "-1")
    with pytest.raises(ValueError, match="stop_loss_atr"):
        Settings(home=tmp_path)
    monkeypatch.delenv("TRADING_STOP_LOSS_ATR")
    with pytest.raises(ValueError, match="set together"):
        DecisionRules.from_settings(Settings(home=tmp_path))
