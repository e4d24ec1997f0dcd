"""Order throughput through risk + paper broker + ops store, and risk-check latency.

    .venv/bin/python bench/orders.py [--orders 1000] [--checks 5000]

Uses a real SQLite ops store (WAL) in a temp dir and in-memory bars. Throughput is one
manual order at a time the way the CLI/API send them: risk context from the store, risk
check, record NEW, broker submit, record ACCEPTED. Fills are then processed in one pass.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl

from trading_pipeline.settings import PROJECT_DIR
from trading_pipeline.trading.brokers.paper import PaperBroker, PolarsBarFeed
from trading_pipeline.trading.execution import submit_order, sync_open_orders
from trading_pipeline.trading.model import OrderRequest, OrderType, Side
from trading_pipeline.trading.risk import RiskContext, RiskEngine, RiskLimits
from trading_pipeline.trading.store import OpsStore

SYMBOLS = [f"S{i:02d}" for i in range(20)]
T0 = datetime(2024, 3, 4)


def bars(day: int) -> pl.DataFrame:
    n = len(SYMBOLS)
    return pl.DataFrame(
        {
            "symbol": SYMBOLS, "timeframe": ["1d"] * n, "ts": [T0 + timedelta(days=day)] * n,
            "open": [100.0] * n, "high": [101.0] * n, "low": [99.0] * n, "close": [100.0] * n, "volume": [1e6] * n,
        }
    )


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=1000)[int(p * 10) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=1000)
    ap.add_argument("--checks", type=int, default=5000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = OpsStore(f"sqlite:///{Path(tmp) / 'ops.sqlite'}")
        feed = PolarsBarFeed(bars(0))
        now = T0 + timedelta(hours=22)
        broker = PaperBroker(store, feed, account="bench", starting_cash=Decimal("100000000"), clock=lambda: now)
        limits = RiskLimits.from_yaml(PROJECT_DIR / "risk.yaml").model_copy(
            update={"max_open_orders": 10**9, "max_orders_per_minute": 10**9, "max_position_quantity": Decimal(10**9),
                    "max_symbol_exposure": Decimal(10**12), "max_total_exposure": Decimal(10**12)}
        )
        engine = RiskEngine(limits, store)
        prices = {s: Decimal(100) for s in SYMBOLS}

        t = time.perf_counter()
        actions: dict[str, int] = {}
        for i in range(args.orders):
            req = OrderRequest(f"bench-{i}", "bench", SYMBOLS[i % len(SYMBOLS)], Side.BUY, Decimal(10), OrderType.MARKET)
            r = submit_order(req, broker=broker, store=store, risk_engine=engine, prices=prices, now=now)
            actions[r.action] = actions.get(r.action, 0) + 1
        submit_s = time.perf_counter() - t
        feed.append(bars(1))
        t = time.perf_counter()
        broker.process_bars()
        synced = sync_open_orders(store, broker, "bench")
        fill_s = time.perf_counter() - t

        ctx = RiskContext.from_store(store, "bench", prices, now)
        req = OrderRequest("probe", "bench", SYMBOLS[0], Side.BUY, Decimal(10), OrderType.LIMIT, Decimal("100.5"))
        check_us: list[float] = []
        for _ in range(args.checks):
            t = time.perf_counter()
            d = engine.check(req, ctx)
            check_us.append((time.perf_counter() - t) * 1e6)
        assert d.approved, d.reason
        ctx_ms: list[float] = []
        for _ in range(200):
            t = time.perf_counter()
            RiskContext.from_store(store, "bench", prices, now)
            ctx_ms.append((time.perf_counter() - t) * 1e3)
        store.close()

    print(f"orders submitted: {args.orders} in {submit_s:.2f}s -> {args.orders / submit_s:,.0f} orders/s "
          f"(risk + store + paper broker, SQLite WAL) actions={actions}")
    print(f"fills: {len(synced)} orders filled and synced in {fill_s:.2f}s -> {len(synced) / fill_s:,.0f} fills/s")
    print(f"risk check (rules + kill-switch read), {args.checks} checks: p50 {pct(check_us, 50):.0f} us, "
          f"p99 {pct(check_us, 99):.0f} us")
    print(f"risk context from the store (portfolio, counts, daily P&L), 200 builds: p50 {pct(ctx_ms, 50):.2f} ms, "
          f"p99 {pct(ctx_ms, 99):.2f} ms")


if __name__ == "__main__":
    main()
