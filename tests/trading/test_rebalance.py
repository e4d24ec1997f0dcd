"""Rebalancing (trading/rebalance.py): hand-checked plans, bad target files, and a real ops
store + paper broker run that a retry does not repeat."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest

from trading_pipeline.trading.brokers.paper import PaperBroker, PolarsBarFeed
from trading_pipeline.trading.rebalance import (
    RebalanceError,
    Targets,
    execute,
    parse_targets,
    plan,
    plan_for_account,
    read_targets,
    rebalance_order_id,
    targets_from_rows,
)

from .conftest import T0, daily_bars


def T(**weights: str) -> Targets:
    return Targets({k: D(v) for k, v in weights.items()}, "t.csv")


def orders_of(p) -> list[tuple[str, str, D]]:
    return [(o.symbol, o.side, o.quantity) for o in p.orders]


def run(targets: Targets, positions: dict, cash: str, prices: dict, **kw):
    kw.setdefault("min_trade", D(0))
    kw.setdefault("drift_band", D(0))
    return plan(account="acct", targets=targets, positions={k: D(v) for k, v in positions.items()}, cash=D(cash),
                prices={k: D(v) for k, v in prices.items()}, session="2024-03-04", **kw)


# ---- the plan, by hand -------------------------------------------------------------------------------

def test_from_cash_to_targets_in_whole_shares_never_past_the_target():
    # equity 10,000: GOOG 50% at 100 -> 50 shares; AAPL 30% at 33 -> 3,000/33 = 90.9 -> 90 (2,970)
    p = run(T(GOOG="0.5", AAPL="0.3"), {}, "10000", {"GOOG": "100", "AAPL": "33"})
    assert orders_of(p) == [("AAPL", "buy", D(90)), ("GOOG", "buy", D(50))]
    assert p.equity == 10000 and p.cash_after == D(10000 - 5000 - 2970)
    aapl = p.orders[0]
    assert (aapl.value, aapl.current_quantity, aapl.target_quantity, aapl.target_weight) == (D(2970), 0, 90, D("0.3"))


def test_from_positions_to_new_targets_sells_first_and_sells_what_is_dropped():
    # GOOG 60 x 100 = 6,000, AAPL 50 x 40 = 2,000, cash 2,000: equity 10,000.
    # GOOG 30% -> 30 shares: sell 30; AAPL not in the targets: sell all 50; MSFT 50% at 50 -> buy 100.
    p = run(T(GOOG="0.3", MSFT="0.5"), {"GOOG": "60", "AAPL": "50"}, "2000",
            {"GOOG": "100", "AAPL": "40", "MSFT": "50"})
    assert orders_of(p) == [("AAPL", "sell", D(50)), ("GOOG", "sell", D(30)), ("MSFT", "buy", D(100))]
    assert p.orders[0].note == "close (not in the targets)" and p.orders[0].current_weight == D("0.2")
    assert p.cash_after == 2000 + 2000 + 3000 - 5000


def test_targets_already_met_give_no_orders():
    p = run(T(GOOG="0.5"), {"GOOG": "50"}, "5000", {"GOOG": "100"})
    assert p.orders == [] and p.skipped == []


def test_drift_band_and_minimum_trade_suppress_small_trades():
    # GOOG 50 x 100 in equity 10,000 is 50%; the target 52% is 2 points away: 52 shares, buy 2 ($200)
    pos, prices = {"GOOG": "50"}, {"GOOG": "100"}
    banded = run(T(GOOG="0.52"), pos, "5000", prices, drift_band=D(3))
    assert banded.orders == [] and "within the drift band: 50.00% vs target 52.00%" in banded.skipped[0].reason
    assert orders_of(run(T(GOOG="0.52"), pos, "5000", prices, drift_band=D(1))) == [("GOOG", "buy", D(2))]
    small = run(T(GOOG="0.52"), pos, "5000", prices, min_trade=D(250))
    assert small.orders == [] and "buy 2 worth 200.00, under the minimum trade 250" in small.skipped[0].reason
    assert orders_of(run(T(GOOG="0.52"), pos, "5000", prices, min_trade=D(200))) == [("GOOG", "buy", D(2))]
    # less than one share away is not an order either
    assert run(T(GOOG="0.5099"), pos, "5000", prices).orders == []


def test_a_target_of_zero_closes_whatever_the_band_and_minimum_and_fractions():
    # 2.5 BTC at 10 is 25 of equity 1,025 (2.4%): inside a 5-point band and under a 100 minimum, closed anyway
    p = run(T(BTC="0", GOOG="0"), {"BTC": "2.5", "GOOG": "-3"}, "1000", {"BTC": "10", "GOOG": "100"},
            drift_band=D(5), min_trade=D(100))
    assert orders_of(p) == [("BTC", "sell", D("2.5")), ("GOOG", "buy", D(3))]  # a short is covered by a buy
    assert p.orders[0].note == "close (target 0)" and p.orders[1].target_quantity == 0


def test_buys_are_scaled_to_the_cash_after_sells():
    # GOOG 80 x 100 = 8,000 (80%) is kept by the 3-point band against its 78% target; cash 2,000.
    # AAPL 22% of 10,000 at 10 = 220 shares = 2,200 > 2,000: scale 2,000/2,200, floor -> 200, which
    # would spend all 2,000 (buying power is a strict ceiling): 199.
    p = run(T(GOOG="0.78", AAPL="0.22"), {"GOOG": "80"}, "2000", {"GOOG": "100", "AAPL": "10"}, drift_band=D(3))
    assert orders_of(p) == [("AAPL", "buy", D(199))]
    assert p.buy_scale == D(2000) / D(2200) and p.cash_after == 10 and "scaled" in p.notes[0]
    # all in at 100% with exact shares: 100 x 100 = the whole cash, so one share less
    assert orders_of(run(T(GOOG="1"), {}, "10000", {"GOOG": "100"})) == [("GOOG", "buy", D(99))]


def test_the_sells_proceeds_fund_the_buys_and_commission_counts():
    # sell 10 GOOG at 100 (fee 1) -> cash 0 + 999; MSFT 100% of 1,000 at 100: 10 = 1,000 + fee > 999 -> 9
    fee = lambda q: D(1)  # noqa: E731 - a flat commission per order
    p = run(T(MSFT="1"), {"GOOG": "10"}, "0", {"GOOG": "100", "MSFT": "100"}, commission=fee)
    assert orders_of(p) == [("GOOG", "sell", D(10)), ("MSFT", "buy", D(9))]
    assert p.cash_after == 999 - 901


def test_a_scaled_buy_under_the_minimum_is_dropped():
    # equity 8,000 + 1,900 = 9,900: GOOG 80.8% is inside the 3-point band around 78%; AAPL 22% = 2,178
    # at 1,000 -> 2 shares = 2,000 >= the cash 1,900: scaled by 0.95 -> 1 share = 1,000 < 1,500: dropped
    p = run(T(GOOG="0.78", AAPL="0.22"), {"GOOG": "80"}, "1900", {"GOOG": "100", "AAPL": "1000"},
            drift_band=D(3), min_trade=D(1500))
    assert p.orders == [] and p.skipped[-1].symbol == "AAPL"
    assert "scaled to 1 shares for lack of cash (under the minimum trade 1500)" in p.skipped[-1].reason


def test_order_ids_are_deterministic_per_account_targets_session_symbol_side():
    a = run(T(GOOG="0.5"), {}, "10000", {"GOOG": "100"}).orders[0].client_order_id
    assert a == run(T(GOOG="0.5"), {}, "10000", {"GOOG": "101"}).orders[0].client_order_id  # same targets, session
    assert a == rebalance_order_id("acct", T(GOOG="0.50").digest(), "2024-03-04", "GOOG", "buy")
    assert a.startswith("rb-") and len(a) == 23
    assert a != run(T(GOOG="0.6"), {}, "10000", {"GOOG": "100"}).orders[0].client_order_id
    assert a != rebalance_order_id("acct", T(GOOG="0.5").digest(), "2024-03-05", "GOOG", "buy")
    assert a != rebalance_order_id("other", T(GOOG="0.5").digest(), "2024-03-04", "GOOG", "buy")


# ---- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("symbol,weight\nGOOG,0.6\nAAPL,0.5\n", "t.csv: weights sum to 1.1, above 1"),
    ("GOOG,-0.1\n", "t.csv line 1 (GOOG): weight must be between 0 and 1"),
    ("GOOG,1.5\n", "t.csv line 1 (GOOG): weight must be between 0 and 1"),
    ("GOOG,nan\n", "t.csv line 1 (GOOG): weight must be a finite number"),
    ("GOOG,inf\n", "t.csv line 1 (GOOG): weight must be a finite number"),
    ("GOOG,half\n", "t.csv line 1 (GOOG): weight must be a number, got 'half'"),
    ("# mine\nGOOG,0.2\n\ngoog,0.1\n", "t.csv line 4 (GOOG): duplicate symbol, first given at line 2"),
    ("GOOG,0.2,x\n", "t.csv line 1: expected 'symbol,weight', got 'GOOG,0.2,x'"),
    (",0.2\n", "t.csv line 1: empty symbol"),
    ("symbol,weight\n# nothing\n", "t.csv: no targets"),
])
def test_bad_target_files_name_the_file_and_line(text, message):
    with pytest.raises(RebalanceError) as exc:
        parse_targets(text, "t.csv")
    assert message in str(exc.value)


def test_targets_file_reading(tmp_path):
    path = tmp_path / "targets.csv"
    path.write_text("symbol,weight\n# comment\ngoog, 0.25\nAAPL,0.5\n")
    t = read_targets(path)
    assert t.weights == {"GOOG": D("0.25"), "AAPL": D("0.5")} and t.source == str(path)
    with pytest.raises(RebalanceError, match="cannot read the targets file"):
        read_targets(tmp_path / "missing.csv")
    with pytest.raises(RebalanceError, match=r"targets item 1 \(GOOG\): duplicate symbol, first given at item 0"):
        targets_from_rows([(0, "GOOG", "0.1"), (1, "GOOG", "0.1")], "targets", "item")


def test_unknown_symbols_and_unpriced_holdings_are_errors():
    with pytest.raises(RebalanceError, match=r"t.csv: no last close for NOPE \(unknown symbol, or no bars"):
        run(T(GOOG="0.5", NOPE="0.1"), {}, "1000", {"GOOG": "100"})
    with pytest.raises(RebalanceError, match="holds OLD with no last close"):
        run(T(GOOG="0.5"), {"OLD": "5"}, "1000", {"GOOG": "100"})
    with pytest.raises(RebalanceError, match="no equity to rebalance"):
        run(T(GOOG="0.5"), {}, "0", {"GOOG": "100"})
    with pytest.raises(RebalanceError, match="drift band"):
        run(T(GOOG="0.5"), {}, "1000", {"GOOG": "100"}, drift_band=D(-1))


# ---- a real ops store and paper broker ----------------------------------------------------------------

@pytest.fixture
def feed() -> PolarsBarFeed:  # overrides conftest's: two symbols
    return PolarsBarFeed(daily_bars("AAA", [(100, 101, 99, 100)]).vstack(daily_bars("BBB", [(50, 51, 49, 50)])))


def test_a_rebalance_run_twice_sends_nothing_twice(store, feed, broker, risk_engine, clock):
    goal = T(AAA="0.4", BBB="0.2")  # equity 100,000: 400 AAA, 400 BBB
    first = plan_for_account(store=store, feed=feed, account="acct", targets=goal, starting_cash=D(100000),
                             min_trade=D(0), drift_band=D(0))
    assert orders_of(first) == [("AAA", "buy", D(400)), ("BBB", "buy", D(400))] and first.session == T0.date().isoformat()
    sent = execute(first, store=store, broker=broker, feed=feed, risk_engine=risk_engine)
    assert [s.action for s in sent] == ["submitted", "submitted"]
    assert [s.client_order_id for s in sent] == [o.client_order_id for o in first.orders]
    # a retry of the same plan: every id is in the store already
    again = execute(first, store=store, broker=broker, feed=feed, risk_engine=risk_engine)
    assert [s.action for s in again] == ["skipped", "skipped"]
    # a new plan while they work: they count as filled at the last close, so nothing more
    replan = plan_for_account(store=store, feed=feed, account="acct", targets=goal, min_trade=D(0), drift_band=D(0))
    assert replan.orders == [] and "2 working rebalance order(s) counted as filled" in replan.notes[0]
    assert len(store.list_orders(account="acct")) == 2
    # the next bar fills them at its open; the account is then at its targets
    feed.append(daily_bars("AAA", [(100, 101, 99, 100)], start=T0 + timedelta(days=1))
                .vstack(daily_bars("BBB", [(50, 51, 49, 50)], start=T0 + timedelta(days=1))))
    clock.now = T0 + timedelta(days=1, hours=22)
    broker.process_bars()
    from trading_pipeline.trading.execution import sync_open_orders

    sync_open_orders(store, broker, "acct")
    pf = store.portfolio("acct")
    assert {p.symbol: p.quantity for p in pf.open_positions()} == {"AAA": 400, "BBB": 400}
    after = plan_for_account(store=store, feed=feed, account="acct", targets=goal, min_trade=D(0), drift_band=D(0))
    assert after.orders == [] and after.session == (T0 + timedelta(days=1)).date().isoformat()


def test_sells_go_first_and_a_denied_order_is_retried_under_a_new_id(store, feed, broker, risk_engine, loose_limits):
    from trading_pipeline.trading.risk import RiskEngine

    # AAA 30,000 is allowed at once; BBB 20,000 reaches a max_order_notional of 20,000: denied
    tight = RiskEngine(loose_limits.model_copy(update={"max_order_notional": D(20000)}), store)
    goal = T(AAA="0.3", BBB="0.2")
    first = plan_for_account(store=store, feed=feed, account="acct", targets=goal, starting_cash=D(100000),
                             min_trade=D(0), drift_band=D(0))
    sent = execute(first, store=store, broker=broker, feed=feed, risk_engine=tight)
    assert [(s.order.symbol, s.action) for s in sent] == [("AAA", "denied"), ("BBB", "denied")]
    assert "max_order_notional" in sent[0].reason
    # limits raised, the same session's re-run: the denied orders go again under -2 ids
    retry = plan_for_account(store=store, feed=feed, account="acct", targets=goal, min_trade=D(0), drift_band=D(0))
    assert [o.client_order_id for o in retry.orders] == [o.client_order_id for o in first.orders]
    resent = execute(retry, store=store, broker=broker, feed=feed, risk_engine=risk_engine)
    assert [s.action for s in resent] == ["submitted", "submitted"]
    assert [s.client_order_id for s in resent] == [o.client_order_id + "-2" for o in first.orders]
    # a working sell is listed before the buy: move to 10% AAA after it filled
    feed.append(daily_bars("AAA", [(100, 101, 99, 100)], start=T0 + timedelta(days=1))
                .vstack(daily_bars("BBB", [(50, 51, 49, 50)], start=T0 + timedelta(days=1))))
    broker.clock.now = T0 + timedelta(days=1, hours=22)
    broker.process_bars()
    from trading_pipeline.trading.execution import sync_open_orders

    sync_open_orders(store, broker, "acct")
    moved = plan_for_account(store=store, feed=feed, account="acct", targets=T(AAA="0.1", BBB="0.5"),
                             min_trade=D(0), drift_band=D(0))
    assert [(o.symbol, o.side) for o in moved.orders] == [("AAA", "sell"), ("BBB", "buy")]
    out = execute(moved, store=store, broker=broker, feed=feed, risk_engine=risk_engine)
    assert [s.action for s in out] == ["submitted", "submitted"]
    assert isinstance(broker, PaperBroker)
