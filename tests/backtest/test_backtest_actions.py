"""Corporate actions in the backtest: raw bars across a split give the same trades, P&L and equity
as the same signals on the twin series built already adjusted; dividends are paid on the pay date
to longs and charged to shorts. Real DuckDB warehouses built by hand (tests/backtest/conftest.py)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from tests.backtest.conftest import AAA, SESSIONS, build_warehouse, signal
from trading_pipeline.backtest.engine import run_backtest
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.marketdata.corporate_actions import DDL

EX = SESSIONS[3]  # 2024-01-05: the split's ex-date
# the twin series: AAA as it traded before a 2-for-1 on EX (prices doubled before it) ...
RAW = [tuple(x * 2 for x in bar) if d < EX else bar for d, bar in zip(SESSIONS, AAA, strict=True)]
ADJUSTED = AAA  # ... and the same bars already adjusted (conftest's AAA)
COSTS = {"slippage_bps": 10, "commission_per_share": 0, "commission_min": 0}  # per-share costs would differ
SIGNALS = [signal("AAA", SESSIONS[1], "breakout_up", "long")]


def store_actions(path: Path, rows: list[dict]) -> None:
    """Rows of raw.corporate_actions, as `trading actions load` stores them."""
    df = pl.DataFrame([{"ratio": None, "amount": None, "new_symbol": None, "pay_date": None, **r} for r in rows],
                      schema_overrides={"ratio": pl.Float64, "amount": pl.Float64, "new_symbol": pl.Utf8,
                                        "pay_date": pl.Date})
    with wh.writer(path) as con:
        con.execute(DDL)
        con.register("_a", df)
        con.execute("INSERT INTO raw.corporate_actions SELECT symbol, ex_date, kind, ratio, amount, new_symbol, "
                    "pay_date, 'test', NULL, now()::TIMESTAMP FROM _a")


@pytest.fixture
def twins(tmp_path):
    raw = build_warehouse(tmp_path / "split.duckdb", {"AAA": RAW}, SIGNALS)
    store_actions(raw, [{"symbol": "AAA", "ex_date": EX, "kind": "split", "ratio": 2.0}])
    adjusted = build_warehouse(tmp_path / "twin.duckdb", {"AAA": ADJUSTED}, SIGNALS)
    return raw, adjusted


@pytest.mark.parametrize("hold", [1, 2, 10])  # exit order working over the ex-date / after it / never
def test_a_split_on_raw_bars_gives_the_adjusted_twin_s_pnl(twins, hold):
    raw, adjusted = (run_backtest(p, strategy="breakout", hold=hold, **COSTS) for p in twins)
    assert raw.trades.height == adjusted.trades.height == 1
    r, a = raw.trades.row(0, named=True), adjusted.trades.row(0, named=True)
    # entry: 500 raw shares @ 22.022 (22 + 10 bps) = 1,000 adjusted shares @ 11.011, re-shaped on the ex-date
    assert (r["quantity"], r["entry_price"]) == (a["quantity"], a["entry_price"]) == (1000, 11.011)
    assert r["pnl"] == pytest.approx(a["pnl"]) and r["exit_price"] == a["exit_price"]
    assert r["pnl"] != 0
    assert raw.equity["equity"].to_list() == pytest.approx(adjusted.equity["equity"].to_list())
    assert raw.metrics["total_return"] == pytest.approx(adjusted.metrics["total_return"])


def test_without_the_action_the_raw_series_shows_a_false_loss(tmp_path):
    """The control: the same raw bars without the stored split lose half the position's value."""
    raw = build_warehouse(tmp_path / "split.duckdb", {"AAA": RAW}, SIGNALS)
    t = run_backtest(raw, strategy="breakout", hold=2, **COSTS).trades.row(0, named=True)
    assert t["quantity"] == 500 and t["pnl"] < -3000


def test_dividends_pay_longs_on_the_pay_date_and_charge_shorts(tmp_path):
    sigs = [signal("AAA", SESSIONS[1], "breakout_up", "long"), signal("BBB", SESSIONS[2], "breakout_down", "short")]
    path = build_warehouse(tmp_path / "w.duckdb", signals=sigs)
    store_actions(path, [
        # AAA: 1,000 held when d4 opens; paid on d6, after the trade closed at d5's open
        {"symbol": "AAA", "ex_date": SESSIONS[3], "kind": "dividend", "amount": 0.5, "pay_date": SESSIONS[5]},
        # BBB: short 201 since d4's open; no pay date: paid on the ex-date
        {"symbol": "BBB", "ex_date": SESSIONS[4], "kind": "dividend", "amount": 1.0},
        # after the last session: never paid within the backtest
        {"symbol": "AAA", "ex_date": date(2024, 2, 1), "kind": "dividend", "amount": 9.0},
    ])
    costs = {"slippage_bps": 0, "commission_per_share": Decimal("0.01"), "commission_min": 1}
    r = run_backtest(path, strategy="breakout", hold=2, allow_short=True, **costs)
    by = {t["symbol"]: t for t in r.trades.iter_rows(named=True)}
    assert by["AAA"]["pnl"] == pytest.approx(2980.0 + 500)  # tests/backtest/test_backtest.py's 2,980, plus 0.5 x 1,000
    assert by["BBB"]["pnl"] == pytest.approx(-4.02 - 201)  # the short pays 1.0 x 201
    without = build_warehouse(tmp_path / "plain.duckdb", signals=sigs)
    plain = run_backtest(without, strategy="breakout", hold=2, allow_short=True, **costs)
    diff = [x - y for x, y in zip(r.equity["equity"], plain.equity["equity"], strict=True)]
    # the short's dividend leaves cash on d5 (its ex-date); the long's arrives on d6 (its pay date)
    assert diff == pytest.approx([0, 0, 0, 0, -201, -201 + 500])


def test_a_stored_split_without_a_ratio_stops_the_backtest_with_what_to_fix(tmp_path):
    from trading_pipeline.backtest.engine import BacktestError

    path = build_warehouse(tmp_path / "w.duckdb", {"AAA": RAW}, SIGNALS)
    store_actions(path, [{"symbol": "AAA", "ex_date": EX, "kind": "split", "ratio": None}])
    with pytest.raises(BacktestError, match="split of AAA on 2024-01-05 has no ratio > 0: fix it in raw.corporate_actions"):
        run_backtest(path, strategy="breakout", hold=2)


def test_a_delisting_closes_the_position_at_its_last_close(tmp_path):
    """The universe as it was: AAA is bought on d3 and delists on d5 (its ex-date: the first
    session it no longer trades); the trade closes at d4's close (13, the last close
    before the ex-date), not at bars a survivor would show later, and nothing is marked after."""
    path = build_warehouse(tmp_path / "w.duckdb", {"AAA": AAA}, SIGNALS)
    store_actions(path, [{"symbol": "AAA", "ex_date": SESSIONS[4], "kind": "delisting"}])
    r = run_backtest(path, strategy="breakout", hold=10, **COSTS)
    assert r.trades.height == 1
    t = r.trades.row(0, named=True)
    assert t["exit_reason"] == "delisted"
    assert t["exit_price"] == pytest.approx(AAA[3][3])  # the close of the session before the ex-date
    assert t["pnl"] == pytest.approx((AAA[3][3] - t["entry_price"]) * t["quantity"])
    equity = r.equity["equity"].to_list()
    assert equity[4] == equity[5]  # flat from the delisting: no position left to mark
    survivor = run_backtest(build_warehouse(tmp_path / "s.duckdb", {"AAA": AAA}, SIGNALS), strategy="breakout",
                            hold=10, **COSTS).trades.row(0, named=True)
    assert survivor["exit_reason"] == "open"  # without the delisting the trade runs to the end
