"""Bracket exits in the backtest: a stop-loss and a take-profit priced from the signal's ATR
(DecisionRules.stop_loss_atr / take_profit_atr), worked from the bar after the entry's fill
bar by the paper broker's own rules, and checked against a real PaperBroker on the same bars.

The set-up for every case: AAA gets a breakout_up on d2 (close 10.00), ATR(14) 1.0, rules
stop 2 ATRs and take-profit 3 ATRs -> stop-loss 8.00, take-profit 13.00. The entry fills at
d3's open (11.00). The d3 bar itself reaches down to 7.00 (through the stop): the exits work
only from d4, so it must not count.
"""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal

import polars as pl
import pytest

from tests.backtest.conftest import BBB, SESSIONS, build_warehouse, signal
from trading_pipeline.backtest.engine import run_backtest
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.trading.decisions import DecisionRules
from trading_pipeline.trading.model import OrderRequest, OrderType, Side, TimeInForce

RULES = DecisionRules(stop_loss_atr=Decimal(2), take_profit_atr=Decimal(3))
NO_COSTS = {"slippage_bps": 0, "commission_per_share": Decimal("0.01"), "commission_min": 1}
SIGNALS = [signal("AAA", SESSIONS[1], "breakout_up", "long")]

BEFORE = [
    (10.0, 10.5, 9.5, 10.0),
    (10.0, 10.5, 9.5, 10.0),  # d2: the signal's bar; close 10
    (11.0, 11.5, 7.0, 10.0),  # d3: entry at the open 11; its low is below the stop, but exits start on d4
]
QUIET = (10.0, 10.5, 9.5, 10.0)
D4 = {  # the first bar the exits work on
    "stop": (10.0, 10.5, 7.5, 8.0),  # trades down through 8: stop-loss at 8.00
    "take_profit": (11.0, 13.5, 10.5, 13.0),  # trades up through 13: take-profit at 13.00
    "gap": (7.0, 7.5, 6.5, 7.2),  # opens below the stop: fills at the open, 7.00
    "both": (10.0, 13.5, 7.5, 10.0),  # through both: the stop-loss is taken
    "neither": QUIET,
}


def _prices(case: str) -> dict:
    return {"AAA": [*BEFORE, D4[case], QUIET, QUIET], "BBB": BBB}


def _run(tmp_path, case: str, *, hold: int = 3, atr: float | None = 1.0, **costs):
    path = build_warehouse(tmp_path / f"{case}.duckdb", prices=_prices(case), signals=SIGNALS, atr=atr)
    return path, run_backtest(path, strategy="breakout", hold=hold, rules=RULES, **(costs or NO_COSTS))


@pytest.mark.parametrize(("case", "reason", "price"), [
    ("stop", "stop_loss", 8.0),
    ("take_profit", "take_profit", 13.0),
    ("gap", "stop_loss", 7.0),
    ("both", "stop_loss", 8.0),
])
def test_a_bracket_exit_closes_the_trade(tmp_path, case: str, reason: str, price: float) -> None:
    _, r = _run(tmp_path, case)
    assert r.trades.height == 1
    t = r.trades.row(0, named=True)
    assert (t["entry_session"], t["entry_price"]) == (SESSIONS[2], 11.0)
    assert (t["exit_reason"], t["exit_session"], t["exit_price"]) == (reason, SESSIONS[3], price)
    assert not t["is_open"] and t["exit_signal_session"] is None
    # 1,000 shares (10% of 100,000 at the close 10), commission 10 each way
    assert t["quantity"] == 1000 and t["commission"] == 20.0
    assert t["pnl"] == pytest.approx(1000 * (price - 11.0) - 20)
    # flat after the exit: the equity stays put and no hold exit is sent for a closed trade
    assert r.equity["equity"][3] == r.equity["equity"][5] == pytest.approx(100_000 + t["pnl"])
    assert r.orders["purpose"].to_list() == ["entry"]
    entry = r.orders.row(0, named=True)
    assert (entry["stop_loss_price"], entry["take_profit_price"], entry["note"]) == (8.0, 13.0, None)


def test_neither_exit_hit_the_hold_exit_applies(tmp_path) -> None:
    _, r = _run(tmp_path, "neither", hold=2)
    t = r.trades.row(0, named=True)
    # held d3 and d4; the hold exit is decided at d4's close and fills at d5's open (10)
    assert (t["exit_reason"], t["exit_session"], t["exit_price"]) == ("hold", SESSIONS[4], 10.0)


def test_no_atr_no_bracket_with_the_reason(tmp_path) -> None:
    _, r = _run(tmp_path, "stop", hold=2, atr=None)
    t = r.trades.row(0, named=True)
    # d4 goes through 8.00, but without an ATR there is no stop: the hold exit closes it at d5's open
    assert (t["exit_reason"], t["exit_price"]) == ("hold", 10.0)
    entry = r.orders.filter(pl.col("purpose") == "entry").row(0, named=True)
    assert entry["stop_loss_price"] is None and entry["take_profit_price"] is None
    assert "no usable ATR" in entry["note"]


def test_signals_wait_while_the_bracket_works(tmp_path) -> None:
    # an opposite signal on d4's close: the position is the bracket's (the symbol has working
    # exits, as live), so it makes no order; the take-profit closes the trade on d5
    sigs = [*SIGNALS, signal("AAA", SESSIONS[3], "breakout_down", "short")]
    prices = {"AAA": [*BEFORE, QUIET, (11.0, 13.5, 10.5, 13.0), QUIET], "BBB": BBB}
    path = build_warehouse(tmp_path / "w.duckdb", prices=prices, signals=sigs)
    r = run_backtest(path, strategy="breakout", hold=0, rules=RULES, **NO_COSTS)
    assert r.orders["purpose"].to_list() == ["entry"]
    t = r.trades.row(0, named=True)
    assert (t["exit_reason"], t["exit_session"], t["exit_price"]) == ("take_profit", SESSIONS[4], 13.0)


COSTS = {"slippage_bps": Decimal(10), "commission_per_share": Decimal("0.01"), "commission_min": Decimal(1)}


@pytest.mark.parametrize("case", ["stop", "take_profit", "gap", "both"])
def test_the_exit_fill_equals_the_paper_brokers(tmp_path, case: str) -> None:
    """The same bracket on the same bars through a real PaperBroker + OpsStore: the same exit,
    bar, price (slippage included: the stop is slipped, the limit never past its price) and
    commission; the other exit cancelled."""
    from trading_pipeline.trading.brokers.paper import PaperBroker, PolarsBarFeed
    from trading_pipeline.trading.execution import bracket_children
    from trading_pipeline.trading.store import OpsStore

    path, r = _run(tmp_path, case, **COSTS)
    t = r.trades.row(0, named=True)
    entry_order = r.orders.row(0, named=True)
    con = wh.connect(path, read_only=True)
    bars = wh.fetch_frame(con, "SELECT * FROM raw.bars_daily WHERE symbol = 'AAA' ORDER BY ts")
    con.close()
    store = OpsStore(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    try:
        signal_close = datetime.combine(SESSIONS[1], time(21, 0))
        broker = PaperBroker(store, PolarsBarFeed(bars), account="paper", clock=lambda: signal_close, **COSTS)
        entry = OrderRequest("e", "paper", "AAA", Side.BUY, Decimal(int(t["quantity"])), OrderType.MARKET, None,
                             TimeInForce.DAY)
        broker.submit(entry)
        for child in bracket_children(entry, Decimal(repr(entry_order["take_profit_price"])),
                                      Decimal(repr(entry_order["stop_loss_price"]))):
            broker.submit(child)
        broker.process_bars()
        broker.process_bars()
        tp, sl = broker.order_status("e-tp"), broker.order_status("e-sl")
        entry_fill = broker.order_status("e").fills[0]
    finally:
        store.close()
    winner, loser = (sl, tp) if t["exit_reason"] == "stop_loss" else (tp, sl)
    assert winner.status.value == "filled" and loser.status.value == "cancelled"
    [fill] = winner.fills
    assert float(entry_fill.price) == t["entry_price"]
    assert float(fill.price) == t["exit_price"]
    assert fill.ts.date() == t["exit_session"]
    assert float(entry_fill.commission + fill.commission) == t["commission"]


def test_the_cli_takes_the_exit_rules_and_refuses_half_a_bracket(trading_home) -> None:
    import json

    from typer.testing import CliRunner

    from tests.backtest.test_backtest import _cli
    from trading_pipeline.settings import get_settings

    build_warehouse(get_settings().warehouse_path, prices=_prices("stop"), signals=SIGNALS, atr=1.0)
    args = ["backtest", "--strategy", "breakout", "--no-store", "--hold", "3", "--slippage-bps", "0", "--json"]
    res = CliRunner().invoke(_cli(), [*args, "--stop-loss-atr", "2", "--take-profit-atr", "3"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert float(out["config"]["rules"]["stop_loss_atr"]) == 2 and out["metrics"]["trades"] == 1
    with_exits = out["metrics"]["total_return"]
    plain = json.loads((r := CliRunner().invoke(_cli(), args)).stdout[r.stdout.index("{"):])
    assert plain["config"]["rules"].get("stop_loss_atr") is None
    assert plain["metrics"]["total_return"] != with_exits  # the stop at 8 closed it; without exits the hold did
    half = CliRunner().invoke(_cli(), [*args, "--stop-loss-atr", "2"])
    assert half.exit_code == 2 and "stop_loss_atr and take_profit_atr are set together" in half.output, half.output
