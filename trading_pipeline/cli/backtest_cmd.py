"""`trading backtest`: replay a strategy's stored signals and show how they would have done.

The backtest runs as the Dagster ``backtest`` job (only Dagster runs write the warehouse),
which stores its trades, equity curve and metrics in ``marts.backtest_*``; this command then
reads them back read-only. ``--no-store`` skips the job and only reads the warehouse.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from trading_pipeline.cli.output import console, err_console, fail, frame_table, print_json
from trading_pipeline.settings import get_settings

METRIC_ROWS = [
    ("total_return", "Total return", "pct"), ("annual_return", "Annual return", "pct"),
    ("volatility", "Volatility (ann.)", "pct"), ("sharpe", "Sharpe", "num"), ("sortino", "Sortino", "num"),
    ("max_drawdown", "Max drawdown", "pct"), ("trades", "Closed trades", "int"), ("open_trades", "Open at end", "int"),
    ("win_rate", "Win rate", "pct"), ("profit_factor", "Profit factor", "num"), ("net_pnl", "Net P&L", "money"),
    ("commission", "Commission", "money"), ("exposure", "Time in market", "pct"),
    ("rejected_orders", "Rejected by risk", "int"), ("sessions", "Sessions", "int"),
]


def _fmt(v: Any, kind: str) -> str:
    if v is None:
        return "n/a"
    return {"pct": f"{v * 100:,.2f}%", "int": f"{int(v):,}", "money": f"{v:,.2f}"}.get(kind, f"{v:,.3f}")


def by_symbol_display(by_symbol: Any) -> Any:
    """The per-symbol table as people read it: rates and returns as percentages, money with
    two decimals (``--json`` keeps the raw numbers: win_rate as a fraction, avg_return_pct in %)."""
    import polars as pl

    money = [c for c in ("pnl", "best_pnl", "worst_pnl") if c in by_symbol.columns]
    return by_symbol.with_columns(
        *[pl.col(c).map_elements(lambda v: f"{v:,.2f}", return_dtype=pl.String) for c in money],
        pl.col("avg_return_pct").map_elements(lambda v: f"{v:,.2f}%", return_dtype=pl.String),
        (pl.col("win_rate") * 100).map_elements(lambda v: f"{v:.1f}%", return_dtype=pl.String),
    ).rename({"avg_return_pct": "avg_return"})


def _summary_table(result: Any) -> Table:
    m = result.metrics
    table = Table(title=f"Backtest {result.config.strategy} ({m.get('start')} to {m.get('end')}, hold {result.config.hold})",
                  header_style="bold cyan", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label, kind in METRIC_ROWS:
        table.add_row(label, _fmt(m.get(key), kind))
    table.caption = f"run {result.run_id}"
    return table


def _check_strategy(path: Path | str, strategy: str, rules_file: Path) -> None:
    from trading_pipeline.backtest.engine import valid_strategies
    from trading_pipeline.marketdata import warehouse as wh

    try:
        con = wh.connect(path, read_only=True)
    except wh.WarehouseLocationError as exc:  # its catalog, its extensions: a setting to fix
        fail(str(exc), code=2)
    try:
        valid = valid_strategies(con, rules_file)
    finally:
        con.close()
    if strategy not in valid:
        fail(f"unknown strategy {strategy!r}", f"valid strategies: {', '.join(valid)}", code=2)


def register(app: typer.Typer) -> None:
    @app.command()
    def backtest(
        strategy: Annotated[str, typer.Option("--strategy", "-s", help="breakout, crp, or a scan name from rules.yaml.")],
        symbol: Annotated[list[str] | None, typer.Option("--symbol", help="Only these symbols (repeat the option).")] = None,
        start: Annotated[str | None, typer.Option(help="First session (YYYY-MM-DD); default: the first with bars.")] = None,
        end: Annotated[str | None, typer.Option(help="Last session (YYYY-MM-DD); default: the last with bars.")] = None,
        hold: Annotated[int, typer.Option(help="Exit after this many sessions; 0 = only on the opposite signal.")] = 5,
        cash: Annotated[float, typer.Option(help="Starting cash.")] = 100_000.0,
        slippage_bps: Annotated[float, typer.Option(help="Slippage against each fill, in basis points.")] = 5.0,
        commission: Annotated[float, typer.Option(help="Commission per share.")] = 0.005,
        commission_min: Annotated[float, typer.Option(help="Minimum commission per fill.")] = 1.0,
        allow_short: Annotated[bool | None, typer.Option("--allow-short/--no-allow-short", help="Let sell signals open shorts (default: TRADING_ALLOW_SHORT, off).")] = None,
        on_repeat: Annotated[str | None, typer.Option(help="A same-side signal while holding: skip or add (default: TRADING_ON_REPEAT_SIGNAL, skip).")] = None,
        on_opposite: Annotated[str | None, typer.Option(help="An opposite signal while holding: exit, reverse or ignore (default: TRADING_ON_OPPOSITE_SIGNAL, exit).")] = None,
        stop_loss_atr: Annotated[float | None, typer.Option(help="Exits: a stop-loss this many ATR(14) below a buy's signal close (above a sell's), with --take-profit-atr (default: TRADING_STOP_LOSS_ATR, none).")] = None,
        take_profit_atr: Annotated[float | None, typer.Option(help="Exits: a take-profit this many ATR(14) from the signal close, with --stop-loss-atr (default: TRADING_TAKE_PROFIT_ATR, none).")] = None,
        report: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report to this path.")] = None,
        store: Annotated[bool, typer.Option("--store/--no-store", help="Store results in marts.backtest_* via a Dagster run.")] = True,
        json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    ) -> None:
        """Replay stored signals: next-open fills, live sizing and risk rules, daily equity."""
        from trading_pipeline import runs
        from trading_pipeline.backtest.engine import (
            BacktestError,
            load_stored,
            reporting_progress,
            run_backtest,
        )
        from trading_pipeline.defs.backtest import BacktestRunConfig
        from trading_pipeline.marketdata import warehouse as wh

        settings = get_settings()
        path = settings.warehouse_path
        if not wh.exists(path):
            fail(f"no warehouse at {path}", "run `trading demo` or `trading ingest PATH` and `trading scan` first")
        for label, value in (("start", start), ("end", end)):
            if value:
                try:
                    date.fromisoformat(value)
                except ValueError:
                    fail(f"--{label} {value!r} is not a date", "use YYYY-MM-DD", code=2)
        if hold < 0:
            fail(f"--hold must be >= 0, got {hold}", code=2)
        _check_strategy(path, strategy, settings.rules_file)
        # one set of parameters for both paths; validated here so a bad one fails before any run
        params = BacktestRunConfig(
            strategy=strategy, symbols=sorted({s.upper() for s in symbol}) if symbol else [], start=start or "",
            end=end or "", hold=hold, initial_cash=cash, slippage_bps=slippage_bps, commission_per_share=commission,
            commission_min=commission_min, allow_short=allow_short, on_repeat=on_repeat, on_opposite=on_opposite,
            stop_loss_atr=stop_loss_atr, take_profit_atr=take_profit_atr,
        )
        try:
            config = params.backtest_config(settings)
        except BacktestError as exc:
            fail(str(exc), code=2)

        progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), TaskProgressColumn(),
                            TextColumn("{task.completed}/{task.total} sessions"), TimeElapsedColumn(),
                            console=err_console, transient=True)
        with progress:
            task = progress.add_task(f"backtest {strategy}", total=None)

            def on_progress(done: int, total: int) -> None:
                if done == 1 or done == total or done % 20 == 0:
                    progress.update(task, completed=done, total=total)

            with reporting_progress(on_progress):
                if store:
                    res = runs.run_job("backtest", settings, run_config={"ops": {"run_backtest": {"config": params.model_dump()}}})
                    if not res.success:
                        progress.stop()
                        unopened = runs.warehouse_error(res)  # the warehouse's location or extensions: exit 2
                        fail(f"backtest run {res.run_id} failed: {unopened or runs.failure_message(res)}",
                             "see the run in the Dagster UI (`make up`) for details", code=2 if unopened else 1)
                    run_id = res.output_for_node("run_backtest")["run_id"]
                    con = wh.connect(path, read_only=True)
                    try:
                        result = load_stored(con, run_id)
                    finally:
                        con.close()
                else:
                    try:
                        result = run_backtest(path, config)
                    except BacktestError as exc:
                        progress.stop()
                        fail(str(exc), code=2)

        if report is not None:
            from trading_pipeline.backtest.report import write_report

            written = write_report(result, report)
            err_console.print(f"report written to {written}")
        if json_out:
            out = result.summary()
            if report is not None:
                out["report"] = str(report)
            print_json(out)
            return
        console.print(_summary_table(result))
        if result.by_symbol.is_empty():
            console.print("no trades: no signal of this strategy in range became a filled order")
        else:
            console.print(frame_table(by_symbol_display(result.by_symbol), title="By symbol", max_rows=50))
