"""`trading demo`: the main job on the bundled sample data and the paper broker."""

from __future__ import annotations

import time
from datetime import date
from typing import TYPE_CHECKING, Annotated

import typer

from trading_pipeline.cli.ingest_cmd import materialization_metadata
from trading_pipeline.cli.output import JsonOpt, console, fail, print_json, progress_bar
from trading_pipeline.settings import get_settings

if TYPE_CHECKING:  # polars is imported by the commands that use it (0.4 s at start-up)
    pass



DEMO_TRADE_DAY = date(2013, 2, 22)


def demo(
    symbols: Annotated[int, typer.Option(help="Synthetic symbols beside the real GOOG/EURUSD bars.")] = 20,
    since: Annotated[str | None, typer.Option(help="First session of daily history to load "
                                              "(default: the sample's first, 2004-08-19).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the whole pipeline on the bundled sample market (no accounts needed).

    History up to 2013-02-22 → scan → orders from that day's signals → the next week's bars
    → scan → the paper broker fills the orders at the next open → portfolio and P&L.
    """
    from trading_pipeline import runs
    from trading_pipeline.marketdata.sources import sample

    settings = get_settings()
    try:
        first = max(date.fromisoformat(since), sample.DAILY_START) if since else sample.DAILY_START
    except ValueError:
        fail(f"--since must be YYYY-MM-DD, got {since!r}", code=2)
    if first >= DEMO_TRADE_DAY:
        fail(f"--since must be before {DEMO_TRADE_DAY}", code=2)
    src = {"source": "sample", "synthetic_symbols": symbols}
    intraday_end = date(2013, 2, 28)  # 2013-03-01 is left for the replay sensor in `make up`
    steps = [
        ("daily history + scan", "scan_daily", {"raw__bars_daily": src}, first, DEMO_TRADE_DAY),
        ("orders from the scan", "trade_signals", {}, None, None),
        ("intraday bars (1m)", "ingest_intraday_bars", {"raw__bars_intraday": {**src, "timeframes": ["1m"]}}, sample.INTRADAY_START, intraday_end),
        ("intraday bars (1h EURUSD)", "ingest_intraday_bars", {"raw__bars_intraday": {**src, "timeframes": ["1h"]}}, date(2017, 4, 17), date(2018, 2, 9)),
        ("next week + scan", "scan_daily", {"raw__bars_daily": src}, date(2013, 2, 25), sample.DAILY_END),
        ("fills and new orders", "trade_signals", {}, None, None),
    ]
    summary: dict = {"home": str(settings.home), "steps": []}
    with progress_bar() as progress:
        task = progress.add_task("demo pipeline", total=len(steps))
        step_task = progress.add_task("", total=None)
        for label, job, ops, start, end in steps:
            sessions = f" ({start} .. {end})" if start else ""
            progress.update(task, description=label + sessions)
            progress.reset(step_task, total=None, description="  starting the run")

            def on_step(done: int, total: int, step: str, _t=step_task) -> None:
                progress.update(_t, completed=done, total=total,
                                description=f"  steps: {step.replace('__', '/') or ('finishing' if done else 'starting')}")

            t0 = time.perf_counter()
            cfg = {"ops": {op: {"config": c} for op, c in ops.items()}}
            result = runs.run_job(job, settings, run_config=cfg, start=start, end=end, on_step=on_step)
            md = materialization_metadata(result)
            summary["steps"].append({"step": label, "job": job, "run_id": result.run_id, "success": result.success,
                                     "seconds": round(time.perf_counter() - t0, 2), **md,
                                     "failed_checks": runs.failed_checks(result)})
            if not result.success:
                progress.stop()
                unopened = runs.warehouse_error(result)  # the warehouse's location or extensions: exit 2
                fail(f"{label}: {unopened or runs.failure_message(result)}", code=2 if unopened else 1)
            progress.advance(task)
    summary["result"] = _demo_result(settings)
    if json_out:
        print_json(summary)
        return
    for s in summary["steps"]:
        extra = f"{s.get('rows_loaded', 0):,} bars loaded, {s.get('rows_rejected', 0):,} rejected" if "rows_loaded" in s else s["job"]
        console.print(f"[green]✓[/] {s['step']}: {extra}, {s['seconds']} s (run {s['run_id'][:8]})")
    r = summary["result"]
    from rich.table import Table

    table = Table(title="demo result", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("signals (marts.signals)", f"{r['signals']:,}")
    for status, n in sorted(r["orders"].items()):
        table.add_row(f"orders {status}", f"{n:,}")
    table.add_row("open positions", f"{r['positions']:,}")
    table.add_row(f"equity ({settings.account})", r["equity"])
    console.print(table)
    console.print("next: [bold].venv/bin/trading portfolio[/], [bold].venv/bin/trading orders[/], "
                  "[bold].venv/bin/trading scan --date 2013-03-01[/], [bold]make up[/] for the Dagster UI")


def _demo_result(settings) -> dict:
    from trading_pipeline.marketdata import warehouse
    from trading_pipeline.trading.store import OpsStore

    con = warehouse.connect(settings.warehouse_path, read_only=True)
    try:
        n_signals = warehouse.fetch_one(con, "SELECT count(*) FROM marts.signals")[0]
        closes = {s: c for s, c in warehouse.fetch_frame(
            con, "SELECT symbol, arg_max(close, ts) AS c FROM raw.bars_daily GROUP BY symbol").iter_rows()}
    finally:
        con.close()
    store = OpsStore.from_settings(settings)
    orders: dict[str, int] = {}
    for o in store.list_orders(limit=100000):
        orders[o.status.value] = orders.get(o.status.value, 0) + 1

    pf = store.portfolio(settings.account)
    from trading_pipeline.trading.model import to_decimal

    prices = {s: to_decimal(c) for s, c in closes.items()}
    return {"signals": n_signals, "orders": orders, "positions": len(pf.open_positions()),
            "equity": f"{pf.equity(prices):,.2f}"}


def register(app: typer.Typer) -> None:
    app.command()(demo)
