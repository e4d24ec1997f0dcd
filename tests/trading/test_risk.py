"""Every risk rule rejects AT its limit, passes just below, and every rejection is stored."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from trading_pipeline.brokers.base import (
    BrokerFill,
    BrokerOrder,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
)
from trading_pipeline.orders import Order
from trading_pipeline.risk import RiskContext, RiskEngine, RiskLimits
from trading_pipeline.settings import PROJECT_DIR

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
    assert c.daily_pnl == D(-1) + D(-100)  # commission realized today + unrealized
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
