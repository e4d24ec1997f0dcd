"""Every risk rule rejects AT its limit, passes just below, and every rejection is stored."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from trading_pipeline.settings import PROJECT_DIR
from trading_pipeline.trading.brokers.base import BrokerFill, BrokerOrder
from trading_pipeline.trading.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from trading_pipeline.trading.orders import Order
from trading_pipeline.trading.risk import RiskContext, RiskEngine, RiskLimits

D = Decimal
NOW = datetime(2024, 3, 4, 15, 0)


def req(qty: str | int, side: Side = Side.BUY, limit: str | None = None, symbol: str = "AAA") -> OrderRequest:
    return OrderRequest(
        client_order_id=f"c-{symbol}-{qty}-{side}-{limit}",
        account="acct",
        symbol=symbol,
        side=side,
        quantity=D(qty),
        order_type=OrderType.LIMIT if limit else OrderType.MARKET,
        limit_price=D(limit) if limit else None,
    )


def stop(qty: str | int, stop_price: str, side: Side = Side.BUY, limit: str | None = None) -> OrderRequest:
    return OrderRequest(
        f"s-{qty}-{side}-{stop_price}-{limit}", "acct", "AAA", side, D(qty),
        OrderType.STOP_LIMIT if limit else OrderType.STOP, D(limit) if limit else None, stop_price=D(stop_price),
    )


def trailing(qty: str | int, side: Side = Side.SELL) -> OrderRequest:
    return OrderRequest(f"t-{qty}-{side}", "acct", "AAA", side, D(qty), OrderType.TRAILING_STOP, trail_percent=D(2))


def ctx(**kw) -> RiskContext:
    base = dict(account="acct", equity=D(1_000_000), last_prices={"AAA": D(10), "BBB": D(10)}, now=NOW)
    base.update(kw)
    return RiskContext(**base)


def engine(store, loose_limits: RiskLimits, **limits) -> RiskEngine:
    return RiskEngine(loose_limits.model_copy(update={k: (D(v) if isinstance(v, str) else v) for k, v in limits.items()}), store)


CASES = [
    # rule, limit override, (request, context) at the limit, (request, context) just below
    ("max_order_quantity", {"max_order_quantity": "100"}, (req(100), ctx()), (req(99), ctx())),
    ("max_order_notional", {"max_order_notional": "1000"}, (req(100), ctx()), (req(99), ctx())),
    ("max_order_notional", {"max_order_notional": "1000"}, (req(10, limit="100", symbol="CCC"), ctx(last_prices={"CCC": D(100)})), (req(10, limit="99.99", symbol="CCC"), ctx(last_prices={"CCC": D(100)}))),
    ("max_position_quantity", {"max_position_quantity": "100"}, (req(40), ctx(positions={"AAA": D(60)})), (req(39), ctx(positions={"AAA": D(60)}))),
    ("max_position_quantity", {"max_position_quantity": "100"}, (req(40, Side.SELL), ctx(positions={"AAA": D(-60)})), (req(39, Side.SELL), ctx(positions={"AAA": D(-60)}))),
    ("max_symbol_exposure", {"max_symbol_exposure": "1000"}, (req(40), ctx(positions={"AAA": D(60)})), (req(39), ctx(positions={"AAA": D(60)}))),
    ("max_total_exposure", {"max_total_exposure": "2000"}, (req(100), ctx(positions={"BBB": D(100)})), (req(99), ctx(positions={"BBB": D(100)}))),
    ("max_concentration", {"max_concentration_pct": "25"}, (req(100), ctx(equity=D(4000))), (req(99), ctx(equity=D(4000)))),
    ("daily_loss_limit", {"daily_loss_limit": "500"}, (req(1), ctx(daily_pnl=D(-500))), (req(1), ctx(daily_pnl=D("-499.99")))),
    ("max_open_orders", {"max_open_orders": 5}, (req(1), ctx(open_orders=5)), (req(1), ctx(open_orders=4))),
    ("max_orders_per_minute", {"max_orders_per_minute": 5}, (req(1), ctx(orders_last_minute=5)), (req(1), ctx(orders_last_minute=4))),
    ("price_collar", {"price_collar_pct": "5"}, (req(1, limit="10.50"), ctx()), (req(1, limit="10.49"), ctx())),
    ("price_collar", {"price_collar_pct": "5"}, (req(1, Side.SELL, limit="9.50"), ctx()), (req(1, Side.SELL, limit="9.51"), ctx())),
    # buying power = 1 x equity 2,000 - gross exposure 1,000 (BBB) = 1,000, i.e. the cash
    ("buying_power", {}, (req(100), ctx(equity=D(2000), positions={"BBB": D(100)})), (req(99), ctx(equity=D(2000), positions={"BBB": D(100)}))),
    # working orders already hold 400 of the 2,000
    ("buying_power", {}, (req(160), ctx(equity=D(2000), committed=D(400))), (req(159), ctx(equity=D(2000), committed=D(400)))),
    # the estimated commission counts: 99.9 x 10 + 1 = 1,000
    ("buying_power", {}, (req("99.9"), ctx(equity=D(2000), positions={"BBB": D(100)}, commission=lambda q: D(1))),
     (req("99.8"), ctx(equity=D(2000), positions={"BBB": D(100)}, commission=lambda q: D(1)))),
    # margin: 2 x equity 4,000 - gross 5,000 = 3,000 (at leverage 1 this account could buy nothing)
    ("buying_power", {"max_leverage": "2"}, (req(300), ctx(equity=D(4000), positions={"BBB": D(500)})), (req(299), ctx(equity=D(4000), positions={"BBB": D(500)}))),
    # stops: a stop is valued at its stop price, a stop-limit at its limit, a trailing stop at the last close
    ("max_order_notional", {"max_order_notional": "1000"}, (stop(10, "100"), ctx(last_prices={"AAA": D(99)})), (stop(10, "99.99"), ctx(last_prices={"AAA": D(99)}))),
    ("max_order_notional", {"max_order_notional": "1000"}, (stop(10, "99", limit="100"), ctx(last_prices={"AAA": D(98)})), (stop(10, "99", limit="99.99"), ctx(last_prices={"AAA": D(98)}))),
    ("max_order_notional", {"max_order_notional": "1000"}, (trailing(100), ctx()), (trailing(99), ctx())),
    ("buying_power", {}, (stop(100, "10.5"), ctx(equity=D(1050))), (stop(99, "10.5"), ctx(equity=D(1050)))),
    # the collar applies to a stop price (and to a stop-limit's limit) as to a limit
    ("price_collar", {"price_collar_pct": "5"}, (stop(1, "10.50"), ctx()), (stop(1, "10.49"), ctx())),
    ("price_collar", {"price_collar_pct": "5"}, (stop(1, "9.50", Side.SELL), ctx()), (stop(1, "9.51", Side.SELL), ctx())),
    ("price_collar", {"price_collar_pct": "5"}, (stop(1, "10.40", limit="10.50"), ctx()), (stop(1, "10.40", limit="10.49"), ctx())),
    # a short sale takes buying power like a purchase
    ("buying_power", {}, (req(100, Side.SELL), ctx(equity=D(2000), positions={"BBB": D(100)})), (req(99, Side.SELL), ctx(equity=D(2000), positions={"BBB": D(100)}))),
]


@pytest.mark.parametrize(("rule", "limits", "at", "below"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_rejects_at_limit_and_passes_just_below(store, loose_limits, rule, limits, at, below) -> None:
    eng = engine(store, loose_limits, **limits)
    rejected = eng.check(*at)
    assert not rejected.approved
    assert rejected.rule == rule
    assert rejected.reason and rejected.limit is not None and rejected.value is not None
    assert rejected.value >= rejected.limit
    passed = eng.check(*below)
    assert passed.approved, passed.reason
    events = store.list_risk_events()
    assert len(events) == 1  # only the rejection is stored
    ev = events[0]
    assert (ev.rule, ev.client_order_id, ev.symbol, ev.quantity) == (rule, at[0].client_order_id, at[0].symbol, at[0].quantity)
    assert ev.value == rejected.value and ev.limit_value == rejected.limit and ev.reason == rejected.reason


def test_reasons_carry_the_numbers(store, loose_limits) -> None:
    d = engine(store, loose_limits, max_order_notional="1000").check(req(100), ctx())
    assert "1,000.00" in d.reason and "100 x 10" in d.reason
    d = engine(store, loose_limits, max_concentration_pct="25").check(req(100), ctx(equity=D(4000)))
    assert "25.00% of equity 4,000.00" in d.reason and "limit is 25%" in d.reason


def test_reducing_orders_pass_holding_limits(store, loose_limits) -> None:
    eng = engine(store, loose_limits, max_position_quantity="100", max_symbol_exposure="100", max_total_exposure="100", max_concentration_pct="1")
    over = ctx(positions={"AAA": D(500)})
    assert eng.check(req(100, Side.SELL), over).approved
    assert not eng.check(req(1, Side.BUY), over).approved


def test_no_last_price_is_rejected(store, loose_limits) -> None:
    d = RiskEngine(loose_limits, store).check(req(1, symbol="ZZZ"), ctx())
    assert not d.approved and d.rule == "price_collar" and "no last close for ZZZ" in d.reason


def test_kill_switch_blocks_everything_and_is_read_from_the_store(store, loose_limits) -> None:
    eng = RiskEngine(loose_limits, store)
    assert eng.check(req(1), ctx()).approved
    store.set_kill_switch(True, reason="desk halt", updated_by="ops")
    d = eng.check(req(1, Side.SELL), ctx(positions={"AAA": D(10)}))
    assert not d.approved and d.rule == "kill_switch"
    assert "desk halt" in d.reason and "by ops" in d.reason
    store.set_kill_switch(False)
    assert eng.check(req(1), ctx()).approved
    assert [e.rule for e in store.list_risk_events()] == ["kill_switch"]


def test_buying_power_never_blocks_reducing_orders(store, loose_limits) -> None:
    eng = RiskEngine(loose_limits, store)
    long_over = ctx(equity=D(1000), positions={"AAA": D(500)})  # buying power 1,000 - 5,000 < 0
    assert eng.check(req(500, Side.SELL), long_over).approved  # closes the long
    d = eng.check(req(501, Side.SELL), long_over)  # ... and opens a short of 1: needs 10
    assert not d.approved and d.rule == "buying_power" and "(opening 1)" in d.reason
    short_over = ctx(equity=D(1000), positions={"AAA": D(-500)})
    assert eng.check(req(500), short_over).approved  # covering a short
    assert not eng.check(req(1, symbol="BBB"), short_over).approved
    assert [e.rule for e in store.list_risk_events()] == ["buying_power", "buying_power"]


def test_buying_power_reason_names_the_numbers(store, loose_limits) -> None:
    d = RiskEngine(loose_limits, store).check(
        req(100), ctx(equity=D(2000), positions={"BBB": D(100)}, committed=D(250), commission=lambda q: D("1.5"))
    )
    assert d.rule == "buying_power" and (d.value, d.limit) == (D("1251.5"), D(1000))
    assert d.reason == (
        "buy 100 AAA needs 1,001.50 (100 x 10 + commission 1.50); with 250.00 held by working orders that is "
        "1,251.50, reaching buying power 1,000.00 (1 x equity 2,000.00 - gross exposure 1,000.00)"
    )


def fill(store, coid: str, side: Side, qty: str, price: str, ts: datetime, symbol: str = "AAA", commission: str = "0") -> None:
    store.insert_order(Order(coid, "acct", symbol, side, D(qty), created_at=ts))
    f = BrokerFill(f"f-{coid}", coid, D(qty), D(price), D(commission), ts)
    store.sync_from_broker(coid, BrokerOrder(coid, f"b-{coid}", symbol, side, D(qty), D(qty), OrderStatus.FILLED, D(price), fills=(f,)))


def test_buying_power_from_store_is_cash_and_counts_working_orders(store, loose_limits) -> None:
    """A cash account: buying power is the cash; working buys (not fills) hold it; working
    sells of a long free nothing until they fill; the broker's commission is counted."""
    store.ensure_account("acct", D(10000))
    fill(store, "o1", Side.BUY, "10", "100", NOW - timedelta(hours=1), commission="1")
    eng = RiskEngine(loose_limits, store)
    c = RiskContext.from_store(store, "acct", {"AAA": D(90), "BBB": D(100)}, now=NOW)
    assert eng.buying_power(c) == store.portfolio("acct").cash == D(8999)
    # a resting limit buy holds 40 x 50 = 2,000; a working sell of the long holds nothing
    store.insert_order(Order("w1", "acct", "BBB", Side.BUY, D(40), OrderType.LIMIT, D(50), created_at=NOW))
    store.insert_order(Order("w2", "acct", "AAA", Side.SELL, D(10), created_at=NOW))
    prices = {"AAA": D(90), "BBB": D(100), "CCC": D(100)}
    c = RiskContext.from_store(store, "acct", prices, now=NOW, commission=lambda q: D(1))
    assert c.committed == D(2001)
    # 8,999 - 2,001 = 6,998 left: 69 x 100 + 1 = 6,901 passes, 69.97 x 100 + 1 = 6,998 is at the limit
    assert eng.check(req(69, symbol="CCC"), c).approved
    d = eng.check(req("69.97", symbol="CCC"), c)
    assert not d.approved and d.rule == "buying_power" and (d.value, d.limit) == (D(8999), D(8999))
    # selling AAA: the working sell already closes the long of 10, so all 78 open a short:
    # 78 x 90 + 1 = 7,021 + 2,001 reaches 8,999 (counting the long, 68 would open: 8,122 passes)
    d = eng.check(req(78, Side.SELL), c)
    assert not d.approved and d.rule == "buying_power" and d.value == D(9022)
    assert eng.check(req(77, Side.SELL), c).approved
    # a working market order nobody can price makes buying power unknown (opening orders only)
    store.insert_order(Order("w3", "acct", "ZZZ", Side.BUY, D(1), created_at=NOW))
    c = RiskContext.from_store(store, "acct", prices, now=NOW)
    assert c.unpriced_working == ("ZZZ",)
    d = eng.check(req(1, symbol="CCC"), c)
    assert not d.approved and d.rule == "buying_power" and "ZZZ" in d.reason
    assert eng.check(req(1, Side.SELL, symbol="BBB"), c).approved  # reduces (the working BBB buy)
    assert store.symbols_in_play("acct") == ["AAA", "BBB", "ZZZ"]


DAY1 = datetime(2024, 3, 4, 15, 0)
DAY2 = DAY1 + timedelta(days=1)


def carried_loss(store) -> None:
    """Bought 100 AAA at 100 on day 1; it closed day 1 at 50: a 5,000 unrealized loss carried into day 2."""
    store.ensure_account("acct", D(100000))
    fill(store, "b1", Side.BUY, "100", "100", DAY1)
    store.record_equity_mark("acct", DAY1.date(), D(95000), D(-5000), DAY1.replace(hour=23))


def test_daily_loss_is_measured_from_the_previous_close(store, loose_limits) -> None:
    carried_loss(store)
    eng = engine(store, loose_limits, daily_loss_limit="1000")
    c = RiskContext.from_store(store, "acct", {"AAA": D(50)}, now=DAY2)
    assert (c.daily_pnl, c.day_start_equity) == (D(0), D(95000))  # the old loss is not today's
    assert eng.check(req(1), c).approved
    # AAA falls another 10 today: a 1,000 loss made today, exactly the limit
    c = RiskContext.from_store(store, "acct", {"AAA": D(40)}, now=DAY2 + timedelta(hours=1))
    d = eng.check(req(1), c)
    assert not d.approved and d.rule == "daily_loss_limit" and (d.value, d.limit) == (D(1000), D(1000))
    assert d.reason == ("today's loss is 1,000.00 (equity 94,000.00 now vs 95,000.00 at the start of the day); "
                        "limit is 1,000.00")
    assert eng.check(req(100, Side.SELL), c).approved  # past the limit, cutting the position still passes
    assert not eng.check(req(101, Side.SELL), c).approved  # ...but not turning it into a short
    c = RiskContext.from_store(store, "acct", {"AAA": D("40.01")}, now=DAY2 + timedelta(hours=1))
    assert c.daily_pnl == D(-999) and eng.check(req(1), c).approved
    # selling today at 40 realizes 6,000, but only the 1,000 since the start of the day is today's
    fill(store, "s1", Side.SELL, "100", "40", DAY2 + timedelta(hours=2))
    c = RiskContext.from_store(store, "acct", {"AAA": D(40)}, now=DAY2 + timedelta(hours=3))
    assert c.daily_pnl == D(-1000) and not eng.check(req(1), c).approved
    assert not eng.check(req(1, Side.SELL), c).approved  # flat now: a sell would open a short


def test_daily_loss_without_an_earlier_mark_counts_from_the_first_mark_of_the_day(store, loose_limits) -> None:
    """Positions from before marks were recorded: realized today + unrealized change since the first mark."""
    store.ensure_account("acct", D(100000))
    fill(store, "b1", Side.BUY, "100", "100", DAY1)
    eng = engine(store, loose_limits, daily_loss_limit="1000")
    c = RiskContext.from_store(store, "acct", {"AAA": D(50)}, now=DAY2)  # today's first mark
    assert c.daily_pnl == 0 and eng.check(req(1), c).approved
    c = RiskContext.from_store(store, "acct", {"AAA": D(40)}, now=DAY2 + timedelta(hours=1))
    assert (c.daily_pnl, c.day_start_equity) == (D(-1000), D(95000))
    assert not eng.check(req(1), c).approved
    c = RiskContext.from_store(store, "acct", {"AAA": D("40.01")}, now=DAY2 + timedelta(hours=1))
    assert eng.check(req(1), c).approved
    # the next day measures from the latest mark of this one (equity 94,001)
    c = RiskContext.from_store(store, "acct", {"AAA": D("40.01")}, now=DAY2 + timedelta(days=1))
    assert (c.daily_pnl, c.day_start_equity) == (D(0), D(94001))


def test_equity_marks_keep_the_first_and_the_latest(store) -> None:
    day = DAY1.date()
    store.record_equity_mark("acct", day, D(100), D(0), DAY1)
    store.record_equity_mark("acct", day, D(90), D(-10), DAY1 + timedelta(hours=2))
    store.record_equity_mark("acct", day, D(95), D(-5), DAY1 + timedelta(hours=1))  # late arrival: not the latest
    m = store.equity_mark("acct", day)
    assert (m.first_equity, m.first_unrealized_pnl, m.first_ts) == (D(100), D(0), DAY1)
    assert (m.last_equity, m.last_ts) == (D(90), DAY1 + timedelta(hours=2))
    assert store.last_equity_mark_before("acct", day) is None
    assert store.last_equity_mark_before("acct", day + timedelta(days=3)).last_equity == D(90)
    # a read-only context leaves the marks alone
    store.ensure_account("acct", D(100))
    RiskContext.from_store(store, "acct", {}, now=DAY2, record_mark=False)
    assert store.equity_mark("acct", DAY2.date()) is None


def test_context_from_store(store) -> None:
    store.ensure_account("acct", D(10000))
    o = Order("o1", "acct", "AAA", Side.BUY, D(10), created_at=NOW - timedelta(seconds=30))
    store.insert_order(o)
    fill = BrokerFill("f1", "o1", D(10), D(100), D(1), NOW - timedelta(seconds=20))
    store.sync_from_broker("o1", BrokerOrder("o1", "b1", "AAA", Side.BUY, D(10), D(10), OrderStatus.FILLED, D(100), fills=(fill,)))
    store.insert_order(Order("o2", "acct", "AAA", Side.BUY, D(1), created_at=NOW - timedelta(minutes=5)))
    c = RiskContext.from_store(store, "acct", {"AAA": D(90)}, now=NOW)
    assert c.positions == {"AAA": D(11)}  # 10 booked + o2's 1 still working
    assert c.equity == D(10000) - D(1001) + D(900)
    # no fill before today: today's P&L is all of it since the starting cash (commission + unrealized)
    assert c.daily_pnl == D(-1) + D(-100) and c.day_start_equity == D(10000)
    assert c.gross_exposure == D(900) and c.committed == D(90)  # o2: 1 more AAA at the last close
    assert c.open_orders == 1  # o2 is still NEW; o1 is filled
    assert c.orders_last_minute == 1  # o1 only; o2 is older than a minute


def test_limits_from_the_repo_file_and_strictness(tmp_path: Path) -> None:
    limits = RiskLimits.from_yaml(PROJECT_DIR / "risk.yaml")
    assert limits.max_open_orders > 0 and limits.price_collar_pct > 0
    bad = tmp_path / "r.yaml"
    bad.write_text("max_order_quantty: 5\n")
    with pytest.raises(ValidationError, match="max_order_quantty"):
        RiskLimits.from_yaml(bad)
    bad.write_text("max_order_quantity: -5\n")
    with pytest.raises(ValidationError):
        RiskLimits.from_yaml(bad)


def test_working_orders_count_toward_position_limits(store, loose_limits) -> None:
    """Two orders each under the position limit cannot exceed it together."""
    store.ensure_account("acct", D(100000))
    eng = engine(store, loose_limits, max_position_quantity="100")
    prices = {"AAA": D(100)}
    assert eng.check(req(60), RiskContext.from_store(store, "acct", prices, now=NOW)).approved
    store.insert_order(Order("w1", "acct", "AAA", Side.BUY, D(60), created_at=NOW))  # accepted, not filled
    d = eng.check(req(60), RiskContext.from_store(store, "acct", prices, now=NOW))
    assert not d.approved and d.rule == "max_position_quantity"
    assert eng.check(req(39), RiskContext.from_store(store, "acct", prices, now=NOW)).approved


def test_working_stop_orders_hold_buying_power_at_their_price(store, loose_limits) -> None:
    store.ensure_account("acct", D(10000))
    store.insert_order(Order("s1", "acct", "AAA", Side.BUY, D(10), OrderType.STOP, stop_price=D(120), created_at=NOW))
    store.insert_order(Order("s2", "acct", "BBB", Side.BUY, D(10), OrderType.STOP_LIMIT, D(55), stop_price=D(52), created_at=NOW))
    store.insert_order(Order("s3", "acct", "CCC", Side.BUY, D(10), OrderType.TRAILING_STOP, trail_amount=D(3), created_at=NOW))
    c = RiskContext.from_store(store, "acct", {"AAA": D(100), "BBB": D(50), "CCC": D(30)}, now=NOW)
    assert c.committed == D(10) * 120 + D(10) * 55 + D(10) * 30


def test_contradictory_terms_are_refused_before_risk_and_nothing_is_stored(store, loose_limits) -> None:
    from trading_pipeline.trading.brokers.paper import PaperBroker, PolarsBarFeed
    from trading_pipeline.trading.execution import submit_order
    from trading_pipeline.trading.model import InvalidOrder

    from .conftest import daily_bars

    broker = PaperBroker(store, PolarsBarFeed(daily_bars("AAA", [(10, 10, 10, 10)])), account="acct")
    eng = RiskEngine(loose_limits, store)
    bad = {
        "needs a positive stop_price": OrderRequest("b1", "acct", "AAA", Side.BUY, D(1), OrderType.STOP),
        "needs a positive limit_price": OrderRequest("b2", "acct", "AAA", Side.BUY, D(1), OrderType.STOP_LIMIT, stop_price=D(11)),
        "a stop order has no limit_price": OrderRequest("b3", "acct", "AAA", Side.BUY, D(1), OrderType.STOP, D(11), stop_price=D(11)),
        "buy stop must be above the market": stop(1, "10"),
        "sell stop must be below the market": stop(1, "10", Side.SELL),
        "exactly one of": OrderRequest("b4", "acct", "AAA", Side.SELL, D(1), OrderType.TRAILING_STOP,
                                       trail_percent=D(1), trail_amount=D(1)),
        "trail_amount must be > 0": OrderRequest("b5", "acct", "AAA", Side.SELL, D(1), OrderType.TRAILING_STOP, trail_amount=D(0)),
        "trail_percent must be > 0 and < 100": OrderRequest("b6", "acct", "AAA", Side.SELL, D(1), OrderType.TRAILING_STOP,
                                                            trail_percent=D(-1)),
        "day or gtc, not opg": OrderRequest("b7", "acct", "AAA", Side.SELL, D(1), OrderType.STOP, time_in_force=TimeInForce.OPG,
                                            stop_price=D(9)),
        "has no stop_price": OrderRequest("b8", "acct", "AAA", Side.BUY, D(1), OrderType.LIMIT, D(10), stop_price=D(11)),
    }
    for reason, request in bad.items():
        with pytest.raises(InvalidOrder, match=reason):
            submit_order(request, broker=broker, store=store, risk_engine=eng, prices={"AAA": D(10)})
    assert store.list_orders() == [] and store.list_risk_events() == []
    ok = submit_order(stop(1, "10.01"), broker=broker, store=store, risk_engine=eng, prices={"AAA": D(10)})
    assert ok.action == "submitted" and store.get_order(ok.client_order_id).stop_price == D("10.01")
