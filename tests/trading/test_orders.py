"""The order state machine and deterministic client order ids."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from trading_pipeline.trading.model import OrderStatus, OrderType, Side, TimeInForce
from trading_pipeline.trading.orders import TRANSITIONS, IllegalTransition, Order, client_order_id

S = OrderStatus


def make(**kw) -> Order:
    base = dict(client_order_id="tp-x", account="a", symbol="AAA", side=Side.BUY, quantity=Decimal("10"))
    base.update(kw)
    return Order(**base)


def test_happy_path_new_accepted_partial_filled() -> None:
    o = make()
    assert o.status == S.NEW and o.is_open
    o.transition(S.ACCEPTED, "broker ack")
    e1 = o.apply_fill(Decimal("4"), Decimal("100"))
    assert (e1.from_status, e1.to_status) == (S.ACCEPTED, S.PARTIALLY_FILLED)
    e2 = o.apply_fill(Decimal("6"), Decimal("110"))
    assert e2.to_status == S.FILLED
    assert o.filled_quantity == Decimal("10")
    assert o.avg_fill_price == Decimal("106")
    assert not o.is_open


@pytest.mark.parametrize("terminal", [S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED])
def test_terminal_states_have_no_exit(terminal: OrderStatus) -> None:
    assert TRANSITIONS[terminal] == frozenset()
    o = make(status=terminal, filled_quantity=Decimal("10") if terminal == S.FILLED else Decimal(0))
    for target in S:
        with pytest.raises(IllegalTransition, match="cannot go from"):
            o.transition(target, "try")


def test_illegal_transitions_raise_with_clear_message() -> None:
    o = make()
    with pytest.raises(IllegalTransition, match=r"tp-x: cannot go from new to expired"):
        o.transition(S.EXPIRED, "x")
    with pytest.raises(IllegalTransition, match="cannot fill an order that is new"):
        o.apply_fill(Decimal("1"), Decimal("1"))
    o.transition(S.ACCEPTED, "ok")
    with pytest.raises(IllegalTransition, match="record the fills first"):
        o.transition(S.FILLED, "no fills")
    with pytest.raises(IllegalTransition, match="overfill"):
        o.apply_fill(Decimal("11"), Decimal("1"))
    o.transition(S.CANCELLED, "user")
    assert o.reason == "user"
    with pytest.raises(IllegalTransition):
        o.apply_fill(Decimal("1"), Decimal("1"))


def test_cancel_and_modify_requests() -> None:
    o = make(order_type=OrderType.LIMIT, limit_price=Decimal("50"), time_in_force=TimeInForce.GTC)
    o.transition(S.ACCEPTED, "ack")
    o.apply_fill(Decimal("3"), Decimal("50"))
    ev = o.request_modify(quantity=Decimal("20"), limit_price=Decimal("51"))
    assert o.quantity == Decimal("20") and o.limit_price == Decimal("51")
    assert "quantity 10 -> 20" in ev.reason and ev.kind == "modify_request"
    with pytest.raises(IllegalTransition, match="must exceed the filled 3"):
        o.request_modify(quantity=Decimal("3"))
    o.request_cancel()
    assert o.cancel_requested and o.status == S.PARTIALLY_FILLED
    with pytest.raises(IllegalTransition, match="cancel is pending"):
        o.request_modify(quantity=Decimal("30"))
    o.transition(S.CANCELLED, "done")
    with pytest.raises(IllegalTransition, match="cannot cancel, it is cancelled"):
        o.request_cancel()


def test_market_order_cannot_take_limit_modification() -> None:
    o = make()
    with pytest.raises(IllegalTransition, match="market order has no limit"):
        o.request_modify(limit_price=Decimal("1"))


def test_construction_validates() -> None:
    with pytest.raises(ValueError, match="quantity must be > 0"):
        make(quantity=Decimal(0))
    with pytest.raises(ValueError, match="needs a positive limit_price"):
        make(order_type=OrderType.LIMIT)
    with pytest.raises(ValueError, match="market order has no limit_price"):
        make(limit_price=Decimal("1"))


def test_request_round_trip() -> None:
    o = make(order_type="limit", limit_price=Decimal("9.5"), time_in_force="gtc")
    again = Order.from_request(o.to_request(), strategy="s")
    assert again.to_request() == o.to_request()
    assert again.status == S.NEW


def test_client_order_id_is_deterministic_short_and_safe() -> None:
    ts = datetime(2024, 3, 4, 15, 30)
    a = client_order_id("breakout", "acct", "GOOG", ts, Side.BUY)
    assert a == client_order_id("breakout", "acct", "goog", ts, "buy")
    assert a == client_order_id("breakout", "acct", "GOOG", ts.isoformat(), Side.BUY)
    # the same instant in another timezone is the same signal
    aware = datetime(2024, 3, 4, 10, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert a == client_order_id("breakout", "acct", "GOOG", aware, Side.BUY)
    assert a == client_order_id("breakout", "acct", "GOOG", ts.replace(tzinfo=UTC), Side.BUY)
    assert re.fullmatch(r"tp-[a-z2-7]{20}", a)
    others = {
        client_order_id("crp", "acct", "GOOG", ts, Side.BUY),
        client_order_id("breakout", "acct2", "GOOG", ts, Side.BUY),
        client_order_id("breakout", "acct", "MSFT", ts, Side.BUY),
        client_order_id("breakout", "acct", "GOOG", ts + timedelta(minutes=1), Side.BUY),
        client_order_id("breakout", "acct", "GOOG", ts, Side.SELL),
    }
    assert a not in others and len(others) == 5
    # broker-safe even for symbols with slashes
    assert re.fullmatch(r"tp-[a-z2-7]{20}", client_order_id("s", "a", "EUR/USD", ts, Side.SELL))
