"""Risk monitoring: warnings at a share of a limit, breaches at the limit, drawdown from the
equity marks' peak, VaR above a budget; each alert stored once per account, kind, level and
session (SQLite and Postgres), and monitoring never raises."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from trading_pipeline.settings import Settings
from trading_pipeline.trading.brokers.base import BrokerFill, BrokerOrder
from trading_pipeline.trading.model import OrderStatus, Side
from trading_pipeline.trading.orders import Order
from trading_pipeline.trading.risk import RiskLimits
from trading_pipeline.trading.risk_monitor import (
    AccountState,
    current_alerts,
    evaluate,
    monitor_accounts,
)

D = Decimal
DAY1 = datetime(2024, 3, 4, 21, 0)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY2 + timedelta(days=1)

LIMITS = """
max_total_exposure: 40000
max_symbol_exposure: 100000
max_concentration_pct: 50
max_position_quantity: 1000
daily_loss_limit: 10000
warn_at_pct: 75
drawdown_warn_pct: 5
"""


def settings(tmp_path: Path, text: str = LIMITS) -> Settings:
    (tmp_path / "risk.yaml").write_text(text)
    return Settings(home=tmp_path / "home", risk_file=tmp_path / "risk.yaml", accounts_file=None)


def fill(store, coid: str, side: Side, qty: str, price: str, ts: datetime, symbol: str = "AAA", account: str = "acct") -> None:
    store.insert_order(Order(coid, account, symbol, side, D(qty), created_at=ts))
    f = BrokerFill(f"f-{coid}", coid, D(qty), D(price), D(0), ts)
    store.sync_from_broker(coid, BrokerOrder(coid, f"b-{coid}", symbol, side, D(qty), D(qty), OrderStatus.FILLED, D(price), fills=(f,)))


# ---- the rules, on hand-made states ----------------------------------------------------------

def test_warning_at_the_share_breach_at_the_limit_nothing_below() -> None:
    limits = RiskLimits(max_total_exposure=D(100000), max_symbol_exposure=D(60000), max_concentration_pct=D(25),
                        max_open_orders=10, warn_at_pct=D(80))
    state = AccountState("a", equity=D(400000), positions={"AAA": D(500), "BBB": D(-350)},
                         exposures={"AAA": D(50000), "BBB": D(35000)}, open_orders=8)
    got = {(al.kind, al.level): al for al in evaluate(limits, state)}
    # gross 85,000 = 85% of 100,000; AAA 50,000 = 83.3% of 60,000; 8 orders = 80% of 10 (exactly at the share);
    # concentration 50,000 / 400,000 = 12.5% of 25% = 50%: no alert; leverage 0.2125 of 1: none
    assert set(got) == {("limit_usage:max_total_exposure", "warning"), ("limit_usage:max_symbol_exposure", "warning"),
                        ("limit_usage:max_open_orders", "warning")}
    g = got["limit_usage:max_total_exposure", "warning"]
    assert (g.value, g.limit) == (D(85000), D(100000))
    assert g.message == "a: gross exposure 85,000.00 is 85.0% of max_total_exposure 100,000.00 (warning at 80%)"
    assert got["limit_usage:max_symbol_exposure", "warning"].message.startswith("a: AAA exposure 50,000.00 is 83.3%")
    # one order more reaches the limit: a breach, not a warning
    at = {(al.kind, al.level) for al in evaluate(limits, AccountState("a", equity=D(400000), open_orders=10))}
    assert ("limit_usage:max_open_orders", "breach") in at and ("limit_usage:max_open_orders", "warning") not in at


def test_breaches_are_always_on_warnings_only_with_warn_at_pct() -> None:
    limits = RiskLimits(max_concentration_pct=D(25))  # no warn_at_pct, no drawdown, no VaR budget
    state = AccountState("a", equity=D(100000), positions={"AAA": D(300)}, exposures={"AAA": D(24000)},
                         daily_pnl=D(-4999), peak_equity=D(200000), var_95=D(10**9))
    assert evaluate(limits, state) == []  # 24% of 25%, 4,999 of 5,000: below, and no warnings asked for
    state = AccountState("a", equity=D(100000), positions={"AAA": D(300)}, exposures={"AAA": D(25000)},
                         daily_pnl=D(-5000))
    got = {(al.kind, al.level): al for al in evaluate(limits, state)}
    assert set(got) == {("limit_usage:max_concentration_pct", "breach"), ("daily_loss", "breach")}
    assert got["daily_loss", "breach"].message == (
        "a: today's loss 5,000.00 reaches daily_loss_limit 5,000.00 (100.0%): orders that add to risk are refused")
    assert got["limit_usage:max_concentration_pct", "breach"].value == D(25)


def test_drawdown_and_var_budget() -> None:
    limits = RiskLimits(drawdown_warn_pct=D(10), var_budget=D(2000))
    # 90,000 vs a peak of 100,000: exactly 10% down; VaR 2,000 is not above the budget
    got = evaluate(limits, AccountState("a", equity=D(90000), peak_equity=D(100000), var_95=D(2000)))
    assert [(al.kind, al.value, al.limit) for al in got] == [("drawdown", D(10), D(10))]
    assert got[0].message == "a: equity 90,000.00 is 10.00% below its peak 100,000.00 (warning at 10%)"
    got = evaluate(limits, AccountState("a", equity=D(90001), peak_equity=D(100000), var_95=D("2000.01")))
    assert [(al.kind, al.level, al.value) for al in got] == [("var", "warning", D("2000.01"))]
    assert got[0].message == "a: 1-day 95% VaR 2,000.01 is above the budget 2,000.00"


def test_thresholds_are_validated() -> None:
    for bad in ({"warn_at_pct": 0}, {"warn_at_pct": 101}, {"drawdown_warn_pct": -1}, {"var_budget": 0}):
        with pytest.raises(ValidationError):
            RiskLimits.model_validate(bad)
    with pytest.raises(ValidationError):
        RiskLimits.model_validate({"warn_at": 80})  # unknown keys stay refused


# ---- from the ops store: once per session, drawdown from the marks ------------------------------

def test_alerts_are_stored_once_per_condition_and_session(store, tmp_path) -> None:
    s = settings(tmp_path)
    store.ensure_account("acct", D(100000))
    fill(store, "b1", Side.BUY, "400", "100", DAY1 - timedelta(hours=5))
    store.record_equity_mark("acct", DAY1.date(), D(100000), D(0), DAY1)  # day 1 closes at 100: the peak
    # day 2: AAA at 80. Equity 60,000 + 32,000 = 92,000; today's P&L -8,000 (from day 1's close)
    new = monitor_accounts(s, store, {"AAA": D(80)}, DAY2)
    got = {(a.kind, a.level): a for a in new}
    assert set(got) == {("limit_usage:max_total_exposure", "warning"), ("daily_loss", "warning"), ("drawdown", "warning")}
    assert (got["limit_usage:max_total_exposure", "warning"].value, got["daily_loss", "warning"].value) == (D(32000), D(8000))
    assert got["drawdown", "warning"].value == D(8)  # 8,000 / 100,000
    assert all(a.session_date == DAY2.date() and a.ts == DAY2 and a.delivered_at is None for a in new)
    # the same conditions later the same session: nothing new
    assert monitor_accounts(s, store, {"AAA": D(80)}, DAY2 + timedelta(minutes=30)) == []
    # worse the same session: the daily loss now breaches (a new level); the drawdown warned already
    new = monitor_accounts(s, store, {"AAA": D(70)}, DAY2 + timedelta(hours=1))
    assert [(a.kind, a.level, a.value) for a in new] == [("daily_loss", "breach", D(12000))]
    # the next session alerts again
    store.record_equity_mark("acct", DAY2.date(), D(88000), D(-12000), DAY2 + timedelta(hours=1))
    new = monitor_accounts(s, store, {"AAA": D(70)}, DAY3)
    assert [(a.kind, a.value) for a in new] == [("drawdown", D(12))]  # 88,000 vs the day-1 peak; no loss today
    listed = store.list_risk_alerts()
    assert [a.id for a in listed] == sorted(a.id for a in listed) and len(listed) == 5
    assert store.last_risk_alert_id() == listed[-1].id
    assert [a.kind for a in store.list_risk_alerts(since_id=listed[3].id)] == ["drawdown"]
    assert store.list_risk_alerts(account="other") == []
    assert [a.id for a in store.list_risk_alerts(limit=2, newest_first=True)] == [listed[4].id, listed[3].id]


def test_the_peak_is_the_highest_closing_mark(store) -> None:
    store.ensure_account("acct", D(100000))
    assert store.equity_peak("acct") is None
    for day, eq in ((1, "100000"), (2, "120500.5"), (3, "99000")):
        store.record_equity_mark("acct", date(2024, 3, day), D(eq), D(0), datetime(2024, 3, day, 21))
    assert store.equity_peak("acct") == D("120500.5")
    assert store.equity_peak("acct", upto=date(2024, 3, 1)) == D(100000)


def test_var_above_the_budget_from_daily_closes(store, tmp_path) -> None:
    """13 of 250 returns at -2%, the rest +1%: 5% of 250 is 12.5, so the 13th worst day (-2%) is
    the 95% VaR = 2% of the position's value."""
    returns = [-0.02] * 13 + [0.01] * 237
    closes = [100.0]
    for r in returns:
        closes.append(closes[-1] * (1 + r))
    frame = pl.DataFrame({"symbol": ["AAA"] * len(closes),
                          "session_date": [date(2023, 1, 1) + timedelta(days=i) for i in range(len(closes))],
                          "close": closes})
    last = D(str(closes[-1]))
    store.ensure_account("acct", D(10**7))
    fill(store, "b1", Side.BUY, "400", "100", DAY1 - timedelta(days=1))
    var = 0.02 * 400 * closes[-1]
    loader_calls = []

    def loader(symbols):
        loader_calls.append(list(symbols))
        return frame

    s = settings(tmp_path, f"var_budget: {round(var - 1, 2)}\nmax_total_exposure: 100000000\n"
                           "max_symbol_exposure: 100000000\nmax_concentration_pct: 100\n")
    got = current_alerts(s, store, "acct", {"AAA": last}, DAY2, closes=loader)
    assert [a.kind for a in got] == ["var"] and loader_calls == [["AAA"]]
    assert abs(got[0].value - D(str(var))) <= D("0.01")
    s = settings(tmp_path, f"var_budget: {round(var + 1, 2)}\nmax_total_exposure: 100000000\n"
                           "max_symbol_exposure: 100000000\nmax_concentration_pct: 100\n")
    assert current_alerts(s, store, "acct", {"AAA": last}, DAY2, closes=loader) == []
    # too little history: the VaR is skipped (logged), the other checks run
    short = frame.head(20)
    assert current_alerts(s, store, "acct", {"AAA": last}, DAY2, closes=lambda _: short) == []


def test_monitoring_never_raises(store, tmp_path) -> None:
    store.ensure_account("acct", D(100000))
    broken = Settings(home=tmp_path / "home", risk_file=tmp_path / "missing.yaml", accounts_file=None)
    assert monitor_accounts(broken, store, {}, DAY2) == []

    def failing_loader(_):
        raise OSError("warehouse unavailable")

    fill(store, "b1", Side.BUY, "10", "100", DAY1)
    s = settings(tmp_path, "warn_at_pct: 1\nvar_budget: 1\n")
    new = monitor_accounts(s, store, {"AAA": D(100)}, DAY2, closes=failing_loader)
    # 1,000 of AAA is 1% of max_symbol_exposure 100,000: the rest is still checked and recorded
    assert "limit_usage:max_symbol_exposure" in {a.kind for a in new} and "var" not in {a.kind for a in new}
