"""Benchmark `run_backtest`: 500 symbols x 10 years of synthetic daily bars.

    .venv/bin/python bench/backtest.py                    # 500 symbols x 10 years (~1.26M bars)
    .venv/bin/python bench/backtest.py --symbols 100 --years 2
    .venv/bin/python bench/backtest.py --stop-loss-atr 2 --take-profit-atr 3   # with bracket exits

Steps: synthetic bars are written to a fresh warehouse in a temp dir; a BENCH-ONLY signal
table is generated (see ``bench_signals``) and written to marts.signals; then
``run_backtest`` replays it twice (the second run checks determinism). Reported: wall time
of the backtest (load + replay) and bars/second over every daily bar in range.

The signals here are bench input, NOT the product's breakout definition: those live in
dbt (docs/decisions.md #3). This rule only has to produce a realistic number of signals.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trading_pipeline.backtest.engine import run_backtest  # noqa: E402
from trading_pipeline.marketdata.sources.synthetic import SyntheticBarSource  # noqa: E402
from trading_pipeline.marketdata.warehouse import upsert_bars, writer  # noqa: E402
from trading_pipeline.trading.decisions import DecisionRules  # noqa: E402


def make_bars(n_symbols: int, years: int, end: date) -> pl.DataFrame:
    start = date(end.year - years, end.month, end.day)
    bars = SyntheticBarSource(n_symbols).fetch_bars(None, start, end, "1d")
    return bars.with_columns(pl.col("ts").dt.date().alias("session_date"))


def bench_signals(bars: pl.DataFrame, lookback: int = 20) -> tuple[pl.DataFrame, pl.DataFrame]:
    """BENCH INPUT ONLY: a crude 20-bar channel break as breakout_up/down rows, plus a
    rolling mean range standing in for atr_14. Not the dbt signal; just test load."""
    df = bars.sort("symbol", "ts").with_columns(
        pl.col("high").shift(1).rolling_max(lookback).over("symbol").alias("_hi"),
        pl.col("low").shift(1).rolling_min(lookback).over("symbol").alias("_lo"),
        (pl.col("high") - pl.col("low")).rolling_mean(14).over("symbol").alias("atr_14"),
    )
    up = df.filter(pl.col("close") > pl.col("_hi")).with_columns(
        pl.lit("breakout_up").alias("kind"), pl.lit("long").alias("direction"))
    down = df.filter(pl.col("close") < pl.col("_lo")).with_columns(
        pl.lit("breakout_down").alias("kind"), pl.lit("short").alias("direction"))
    signals = pl.concat([up, down]).select(
        "symbol", "timeframe", "ts", "session_date", "kind", "direction",
        pl.lit(1.0).alias("score"), pl.lit("bench input").alias("reason"), pl.lit("breakout_daily").alias("scan"),
    ).sort("session_date", "symbol")
    indicators = df.select("symbol", "timeframe", "ts", "session_date", "close", "atr_14")
    return signals, indicators


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--hold", type=int, default=5)
    ap.add_argument("--end", default="2024-12-31")
    ap.add_argument("--stop-loss-atr", type=float, default=None, help="bracket exits (with --take-profit-atr)")
    ap.add_argument("--take-profit-atr", type=float, default=None)
    args = ap.parse_args()
    rules = DecisionRules(stop_loss_atr=args.stop_loss_atr, take_profit_atr=args.take_profit_atr)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "warehouse.duckdb"
        t0 = time.perf_counter()
        bars = make_bars(args.symbols, args.years, date.fromisoformat(args.end))
        signals, indicators = bench_signals(bars)
        with writer(path) as con:
            upsert_bars(con, "raw.bars_daily", bars, source="bench")
            con.register("_sig", signals)
            con.execute("CREATE TABLE marts.signals AS SELECT * FROM _sig")
            con.register("_ind", indicators)
            con.execute("CREATE TABLE marts.indicators_daily AS SELECT * FROM _ind")
        setup = time.perf_counter() - t0

        t1 = time.perf_counter()
        first = run_backtest(path, strategy="breakout", hold=args.hold, rules=rules)
        elapsed = time.perf_counter() - t1
        t2 = time.perf_counter()
        second = run_backtest(path, strategy="breakout", hold=args.hold, rules=rules)
        elapsed2 = time.perf_counter() - t2
        deterministic = first.trades.equals(second.trades) and first.equity.equals(second.equity)
        best = min(elapsed, elapsed2)
        out = {
            "symbols": args.symbols,
            "years": args.years,
            "bars": bars.height,
            "bars_loaded": first.bars_processed,
            "sessions": first.equity.height,
            "signals": first.signals_used,
            "trades": first.trades.height,
            "exit_reasons": dict(sorted(first.trades.group_by("exit_reason").len().iter_rows())),
            "rejected_orders": first.metrics["rejected_orders"],
            "setup_s": round(setup, 2),
            "backtest_s": [round(elapsed, 2), round(elapsed2, 2)],
            "bars_per_s": round(bars.height / best),
            "deterministic": deterministic,
            "total_return": first.metrics["total_return"],
            "sharpe": first.metrics["sharpe"],
        }
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
