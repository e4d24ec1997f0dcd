"""Order throughput through risk + paper broker + ops store, and risk-check latency.

    .venv/bin/python bench/orders.py [--orders 1000] [--checks 5000] [--brackets 300] [--cli 5]

Uses a real SQLite ops store (WAL) in a temp dir and in-memory bars. Throughput is one
manual order at a time the way the CLI/API send them: risk context from the store, risk
check, record NEW, broker submit, record ACCEPTED. Fills are then processed in one pass.

Brackets (issue 14): ``--brackets`` entries with a take-profit and a stop-loss each
(``execution.submit_bracket``: 3 orders), then a bar that fills the entries, then a bar that
trades through every stop-loss (the exits trigger, the take-profits are cancelled), each pass
timed, with the plain market orders above as the baseline. ``--cli``: the same bracket through
the command a user runs (``trading order submit ... --take-profit --stop-loss --json``, a
subprocess on its own TRADING_HOME with one bar), wall clock per command.
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
from trading_pipeline.trading.execution import submit_bracket, submit_order, sync_open_orders
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
    ap.add_argument("--brackets", type=int, default=300)
    ap.add_argument("--cli", type=int, default=5, help="bracket submits through the `trading` command (0: skip)")
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
        bracket = bench_brackets(Path(tmp), args.brackets, limits)
    cli_s = bench_cli(args.cli) if args.cli else []

    print(f"orders submitted: {args.orders} in {submit_s:.2f}s -> {args.orders / submit_s:,.0f} orders/s "
          f"(risk + store + paper broker, SQLite WAL) actions={actions}")
    print(f"fills: {len(synced)} orders filled and synced in {fill_s:.2f}s -> {len(synced) / fill_s:,.0f} fills/s")
    print(f"risk check (rules + kill-switch read), {args.checks} checks: p50 {pct(check_us, 50):.0f} us, "
          f"p99 {pct(check_us, 99):.0f} us")
    print(f"risk context from the store (portfolio, counts, daily P&L), 200 builds: p50 {pct(ctx_ms, 50):.2f} ms, "
          f"p99 {pct(ctx_ms, 99):.2f} ms")
    n, b = args.brackets, bracket
    per_order = submit_s / args.orders
    print(f"brackets submitted: {n} (x3 orders) in {b['submit_s']:.2f}s -> {n / b['submit_s']:,.0f} brackets/s, "
          f"{b['submit_s'] / n * 1e3:.1f} ms each = {b['submit_s'] / n / per_order:.1f}x one market order")
    print(f"entries filled: {b['entries']} in {b['fill_s']:.2f}s; stop-losses triggered: {b['stops']} filled, "
          f"{b['cancelled']} take-profits cancelled (OCO) in {b['exit_s']:.2f}s -> {b['stops'] / b['exit_s']:,.0f} exits/s; "
          f"trigger to fill: the bar that crosses the stops is processed and synced in one pass "
          f"({b['exit_s'] / n * 1e3:.1f} ms per bracket)")
    print(f"a bracket costs 3 orders (entry, -tp, -sl) and {b['events']} order events from submit to the stop-loss fill "
          f"(entry: new, accepted, filled; each exit: new, accepted, then filled or cancelled)")
    if cli_s:
        print(f"`trading order submit ... --take-profit --stop-loss` (subprocess, wall clock), {len(cli_s)} runs: "
              f"p50 {statistics.median(cli_s):.2f}s, max {max(cli_s):.2f}s (core: {b['submit_s'] / n * 1e3:.1f} ms)")


def bench_brackets(tmp: Path, n: int, limits: RiskLimits) -> dict:
    """``n`` brackets on their own store; then the entries fill, then every stop-loss triggers."""
    store = OpsStore(f"sqlite:///{tmp / 'brackets.sqlite'}")
    feed = PolarsBarFeed(bars(0))
    clock = {"now": T0 + timedelta(hours=22)}
    broker = PaperBroker(store, feed, account="br", starting_cash=Decimal("100000000"), clock=lambda: clock["now"])
    engine = RiskEngine(limits, store)
    prices = {s: Decimal(100) for s in SYMBOLS}
    t = time.perf_counter()
    for i in range(n):
        req = OrderRequest(f"br-{i}", "br", SYMBOLS[i % len(SYMBOLS)], Side.BUY, Decimal(10), OrderType.MARKET)
        r = submit_bracket(req, take_profit_price=Decimal(110), stop_loss_price=Decimal(95), broker=broker, store=store,
                           risk_engine=engine, prices=prices, now=clock["now"])
        assert r.entry.action == "submitted" and len(r.children) == 2, r
    submit_s = time.perf_counter() - t
    feed.append(bars(1))  # entries fill at this open
    clock["now"] = T0 + timedelta(days=1, hours=22)
    t = time.perf_counter()
    broker.process_bars()
    entries = sum(o.client_order_id.count("-") == 1 for o in sync_open_orders(store, broker, "br"))
    fill_s = time.perf_counter() - t
    down = bars(2).with_columns(pl.lit(96.0).alias("open"), pl.lit(90.0).alias("low"), pl.lit(92.0).alias("close"))
    feed.append(down)  # trades through every stop at 95
    clock["now"] = T0 + timedelta(days=2, hours=22)
    t = time.perf_counter()
    broker.process_bars()
    changed = sync_open_orders(store, broker, "br")
    exit_s = time.perf_counter() - t
    stops = sum(o.client_order_id.endswith("-sl") and o.status.value == "filled" for o in changed)
    cancelled = sum(o.client_order_id.endswith("-tp") and o.status.value == "cancelled" for o in changed)
    assert stops == n and cancelled == n, (stops, cancelled)
    events = sum(len(store.order_events(c)) for c in ("br-0", "br-0-tp", "br-0-sl"))
    store.close()
    return {"submit_s": submit_s, "fill_s": fill_s, "exit_s": exit_s, "entries": entries, "stops": stops,
            "cancelled": cancelled, "events": events}


def bench_cli(runs: int) -> list[float]:
    """The same bracket through ``trading order submit`` in a subprocess (a home with one bar)."""
    from bench._cli import run_cli
    from trading_pipeline.marketdata.warehouse import upsert_bars, writer
    from trading_pipeline.settings import Settings

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        settings = Settings(home=home)
        settings.ensure_dirs()
        with writer(settings.warehouse_path) as con:
            upsert_bars(con, "raw.bars_daily", bars(0).with_columns(pl.col("ts").dt.date().alias("session_date")), source="bench")
        for i in range(runs):
            r = run_cli(["order", "submit", SYMBOLS[i % len(SYMBOLS)], "buy", "10", "--take-profit", "110",
                         "--stop-loss", "95", "--id", f"cli-{i}"], home)
            assert r.out["action"] == "submitted" and len(r.out["children"]) == 2, r.out
            out.append(r.seconds)
    return out


if __name__ == "__main__":
    main()
