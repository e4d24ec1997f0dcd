"""Position accounting: average cost, realized/unrealized P&L, cash, multiple accounts."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from trading_pipeline.trading.model import Side
from trading_pipeline.trading.positions import Fill, Portfolio, Position

D = Decimal


def test_average_cost_and_realized_on_partial_close() -> None:
    p = Position("a", "AAA")
    assert p.apply_fill(Side.BUY, D(10), D(100)) == 0
    p.apply_fill(Side.BUY, D(10), D(110))
    assert p.quantity == 20 and p.avg_price == D(105)
    realized = p.apply_fill(Side.SELL, D(5), D(120), commission=D(1))
    assert realized == D(5) * D(15) - D(1)
    assert p.quantity == 15 and p.avg_price == D(105)  # selling does not change the cost basis
    assert p.unrealized_pnl(D(100)) == D(-75)
    p.apply_fill(Side.SELL, D(15), D(100))
    assert p.quantity == 0 and p.avg_price == 0
    assert p.realized_pnl == D(74) - D(75)


def test_short_and_flip_through_zero() -> None:
    p = Position("a", "AAA")
    p.apply_fill(Side.SELL, D(10), D(50))
    assert p.quantity == -10 and p.avg_price == D(50)
    assert p.unrealized_pnl(D(40)) == D(100)  # short gains when the price falls
    realized = p.apply_fill(Side.BUY, D(15), D(45))
    assert realized == D(50)  # 10 covered at 5 profit
    assert p.quantity == 5 and p.avg_price == D(45)  # the extra 5 opened long at the fill price


def test_portfolio_cash_equity_and_from_fills() -> None:
    t = datetime(2024, 1, 2)
    fills = [
        Fill("f1", "o1", "a", "AAA", Side.BUY, D(10), D(100), D(1), t),
        Fill("f2", "o2", "a", "BBB", Side.BUY, D(5), D(20), D(1), t + timedelta(seconds=1)),
        Fill("f3", "o3", "a", "AAA", Side.SELL, D(4), D(110), D(1), t + timedelta(seconds=2)),
        Fill("g1", "o4", "b", "AAA", Side.BUY, D(1), D(100), D(0), t),  # another account
    ]
    pf = Portfolio.from_fills("a", D(10000), reversed(fills))  # order of input does not matter
    assert pf.cash == D(10000) - D(1001) - D(101) + D(439)
    assert pf.quantity("AAA") == 6 and pf.quantity("BBB") == 5
    assert pf.realized_pnl() == D(40) - D(3)
    prices = {"AAA": D(120), "BBB": D(18)}
    assert pf.unrealized_pnl(prices) == D(6) * D(20) + D(5) * D(-2)
    assert pf.market_value(prices) == D(720) + D(90)
    assert pf.equity(prices) == pf.cash + D(810)
    # cash identity: starting cash + realized - cost of what is still held
    assert pf.cash == D(10000) + pf.realized_pnl() - (D(6) * D(100) + D(5) * D(20))
    other = Portfolio.from_fills("b", D(500), fills)
    assert other.quantity("AAA") == 1 and other.cash == D(400)


def test_missing_price_values_at_cost() -> None:
    pf = Portfolio("a", D(1000))
    pf.apply_fill("AAA", Side.BUY, D(2), D(100))
    assert pf.unrealized_pnl({}) == 0
    assert pf.equity({}) == D(1000)
    assert pf.gross_exposure({"AAA": D(90)}) == D(180)
