"""Portfolio risk report (issue 15): 500 positions x 10 years of daily bars, core and CLI.

    .venv/bin/python bench/portfolio_risk.py [--symbols 500] [--years 10] [--runs 3] [--skip-cli]

Builds a temp TRADING_HOME: a DuckLake warehouse with ``--symbols`` random-walk daily series
(plus SPY, the benchmark) over ``--years`` of XNYS sessions, and one position per symbol in
the ops store (long and short). Times, in this process, loading the closes and the report
(``portfolio_risk.load_closes`` + ``report``: VaR/ES 95/99, N-day, exposure, betas, the three
historical windows); then ``trading risk --json`` as a user runs it (a subprocess, wall clock).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._cli import run_cli  # noqa: E402
from trading_pipeline.marketdata.calendars import session_dates  # noqa: E402
from trading_pipeline.marketdata.warehouse import connect, upsert_bars, writer  # noqa: E402
from trading_pipeline.settings import Settings  # noqa: E402
from trading_pipeline.trading import portfolio_risk as pr  # noqa: E402
from trading_pipeline.trading.brokers.base import BrokerFill, BrokerOrder  # noqa: E402
from trading_pipeline.trading.model import OrderStatus, Side  # noqa: E402
from trading_pipeline.trading.orders import Order  # noqa: E402
from trading_pipeline.trading.store import OpsStore  # noqa: E402


def build(home: Path, n: int, years: int) -> tuple[Settings, int]:
    settings = Settings(home=home)
    settings.ensure_dirs()
    end = date(2023, 12, 29)
    days = session_dates("XNYS", date(end.year - years, 1, 1), end)
    rng = np.random.default_rng(7)
    symbols = [f"S{i:03d}" for i in range(n)] + ["SPY"]
    frames = []
    for s in symbols:
        close = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, len(days))))
        frames.append(pl.DataFrame({"symbol": s, "session_date": days, "close": close}))
    closes = pl.concat(frames)
    bars = closes.with_columns(
        pl.lit("1d").alias("timeframe"), pl.col("session_date").cast(pl.Datetime("us")).alias("ts"),
        pl.col("close").alias("open"), (pl.col("close") * 1.01).alias("high"), (pl.col("close") * 0.99).alias("low"),
        pl.lit(1e6).alias("volume"),
    ).select("symbol", "timeframe", "ts", "session_date", "open", "high", "low", "close", "volume")
    with writer(settings.warehouse_path) as con:
        upsert_bars(con, "raw.bars_daily", bars, source="bench")
    store = OpsStore(settings.ops_store_url)
    store.ensure_account(settings.account, Decimal("10000000"))
    for i, s in enumerate(symbols[:-1]):
        side = Side.BUY if i % 4 else Side.SELL
        q = Decimal(10 + i % 50)
        coid = f"bench-{s}"
        store.insert_order(Order(coid, settings.account, s, side, q))
        fill = BrokerFill(f"{coid}-f", coid, q, Decimal("50"), Decimal(0), bars["ts"].max())
        store.sync_from_broker(coid, BrokerOrder(coid, f"b-{coid}", s, side, q, q, OrderStatus.FILLED, Decimal("50"), fills=(fill,)))
    store.close()
    return settings, bars.height


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-cli", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        t = time.perf_counter()
        settings, nbars = build(home, args.symbols, args.years)
        print(f"built {args.symbols} positions, {nbars:,} daily bars in {time.perf_counter() - t:.1f}s")
        store = OpsStore(settings.ops_store_url)
        books = [pr.book_of(store.portfolio(a)) for a in store.list_accounts()]
        store.close()
        config = pr.RiskConfig()
        load_s, report_s = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            con = connect(settings.warehouse_path, read_only=True)
            closes = pr.load_closes(con, [*pr.symbols_needed(books), "SPY"])
            con.close()
            load_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            rep = pr.report(books, closes, config)
            report_s.append(time.perf_counter() - t)
        total = rep["total"]
        assert "error" not in total, total.get("error")
        print(f"core: load closes median {statistics.median(load_s):.2f}s, report median {statistics.median(report_s):.2f}s "
              f"({args.runs} runs); var_95 {total['var_95']:,.0f}, es_99 {total['es_99']:,.0f}, "
              f"{len(total['scenarios'])} scenarios")
        if not args.skip_cli:
            cli = [run_cli(["risk"], home).seconds for _ in range(args.runs)]
            core = statistics.median(load_s) + statistics.median(report_s)
            print(f"`trading risk --json` (subprocess, wall clock): median {statistics.median(cli):.2f}s, "
                  f"max {max(cli):.2f}s = {statistics.median(cli) / core:.1f}x the core ({core:.2f}s)")


if __name__ == "__main__":
    main()
