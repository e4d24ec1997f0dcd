"""`trading`: status, ingest, scans, backtests, portfolio, orders, rules and SQL.

Every command that changes the warehouse starts a real Dagster run (recorded in the
instance under TRADING_HOME, visible in `make up`); reading commands open the warehouse
read-only. `--json` gives machine-readable output everywhere.
"""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path
from typing import Annotated

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")

import polars as pl  # noqa: E402
import typer  # noqa: E402
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: E402

from trading_pipeline.cli.output import console, err_console, fail, frame_table, print_json  # noqa: E402
from trading_pipeline.settings import get_settings  # noqa: E402

app = typer.Typer(
    name="trading",
    help="Market-data and trading pipeline: Dagster + DuckDB + dbt. State lives in TRADING_HOME "
    "(default ./.trading).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=err_console,
        transient=False,
    )


# ----------------------------------------------------------------------------- ingest

@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="A CSV or Parquet file, or a folder of them.")],
    timeframe: Annotated[str | None, typer.Option(help="Bar size (1m, 5m, 15m, 30m, 1h, 1d); inferred when omitted.")] = None,
    symbol: Annotated[str | None, typer.Option(help="Symbol for files without a symbol column (default: from the file name).")] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="Timezone of naive intraday timestamps (default: the exchange's).")] = None,
    exchange: Annotated[str | None, typer.Option(help="Exchange of new symbols: XNYS, XNAS, FX, CRYPTO (default TRADING_EXCHANGE).")] = None,
    ignore_extra_columns: Annotated[bool, typer.Option(help="Load files that carry unknown extra columns.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Load bars from CSV/Parquet through the same Dagster assets the schedules use."""
    from trading_pipeline import runs
    from trading_pipeline.sources.files import BarFileError, discover, read_bar_file

    settings = get_settings()
    try:
        files = discover(path)
    except BarFileError as exc:
        fail(str(exc), "give a .csv/.parquet file or a folder holding some", code=2)
    parsed = []
    with _progress() as progress:
        task = progress.add_task("checking files", total=len(files))
        for f in files:
            try:
                parsed.append(read_bar_file(f, symbol=symbol, timeframe=timeframe, tz=tz, ignore_extra=ignore_extra_columns))
            except BarFileError as exc:
                progress.stop()
                fail(str(exc), "nothing was loaded; fix the file and run the same command again", code=2)
            progress.advance(task)
        bars = pl.concat([p.bars.select("ts", "timeframe") for p in parsed], how="vertical_relaxed")
        dated = bars.filter(pl.col("ts").is_not_null())
        if dated.is_empty():
            progress.stop()
            fail(f"{path}: no rows with a timestamp", code=2)
        start, end = dated["ts"].min().date(), dated["ts"].max().date()
        jobs = []
        if (bars["timeframe"] == "1d").any():
            jobs.append(("ingest_daily_bars", "raw__bars_daily"))
        if (bars["timeframe"] != "1d").any():
            jobs.append(("ingest_intraday_bars", "raw__bars_intraday"))
        cfg = {"source": "files", "path": str(path.resolve()), "ignore_extra_columns": ignore_extra_columns}
        if tz:
            cfg["timezone"] = tz
        if exchange:
            cfg["exchange"] = exchange
        if symbol:
            cfg["symbols"] = []
        summary = {"files": len(files), "start": start, "end": end, "runs": [], "loaded": 0, "rejected": 0,
                   "rejected_by_rule": {}}
        run_task = progress.add_task("loading through Dagster", total=len(jobs))
        for job, op in jobs:
            t0 = time.perf_counter()
            result = runs.run_job(job, settings, run_config={"ops": {op: {"config": cfg}}}, start=start, end=end)
            md = _materialization_metadata(result)
            summary["runs"].append({"job": job, "run_id": result.run_id, "success": result.success,
                                     "seconds": round(time.perf_counter() - t0, 2),
                                     "failed_checks": runs.failed_checks(result)})
            if not result.success:
                progress.stop()
                if json_out:
                    summary["error"] = runs.failure_message(result)
                    print_json(summary)
                    raise typer.Exit(1)
                fail(f"run {result.run_id} failed: {runs.failure_message(result)}",
                     "the warehouse is unchanged; see the run in the Dagster UI (make up)")
            summary["loaded"] += md.get("rows_loaded", 0)
            summary["rejected"] += md.get("rows_rejected", 0)
            for k, v in (md.get("rejected_by_rule") or {}).items():
                summary["rejected_by_rule"][k] = summary["rejected_by_rule"].get(k, 0) + v
            progress.advance(run_task)
    if json_out:
        print_json(summary)
        return
    console.print(
        f"[green]loaded[/] {summary['loaded']:,} bars from {len(files)} file(s) "
        f"({start} .. {end}); [{'red' if summary['rejected'] else 'green'}]rejected[/] {summary['rejected']:,}"
    )
    if summary["rejected"]:
        console.print("rejections by rule: " + ", ".join(f"{k}={v}" for k, v in summary["rejected_by_rule"].items()))
        console.print("see them with: trading sql \"SELECT * FROM raw.bars_rejected ORDER BY rejected_at DESC LIMIT 20\"")
    failed = [c for r in summary["runs"] for c in r["failed_checks"]]
    if failed:
        fail("quality checks failed: " + ", ".join(failed), "downstream scans and orders are blocked until fixed")


def _materialization_metadata(result) -> dict:
    out: dict = {}
    seen: set = set()
    for ev in result.get_asset_materialization_events():
        # a single-run backfill reports the same metadata once per partition: count it once
        if ev.asset_key in seen:
            continue
        seen.add(ev.asset_key)
        md = ev.event_specific_data.materialization.metadata
        for k in ("rows_loaded", "rows_rejected"):
            if k in md:
                out[k] = out.get(k, 0) + md[k].value
        if "rejected_by_rule" in md:
            for rk, rv in md["rejected_by_rule"].value.items():
                out.setdefault("rejected_by_rule", {})
                out["rejected_by_rule"][rk] = out["rejected_by_rule"].get(rk, 0) + rv
    return out


# ----------------------------------------------------------------------------- status / sql

@app.command()
def status(json_out: JsonOpt = False) -> None:
    """Warehouse contents (symbols, bars per timeframe, date ranges), last run and failed checks."""
    from trading_pipeline import runs, warehouse

    settings = get_settings()
    info: dict = {"home": str(settings.home), "warehouse": str(settings.warehouse_path)}
    if not settings.warehouse_path.exists():
        if json_out:
            info["bars"] = []
            print_json(info)
            return
        fail(f"no warehouse at {settings.warehouse_path}", "run `trading demo` or `trading ingest PATH` first")
    con = warehouse.connect(settings.warehouse_path, read_only=True)
    try:
        bars = warehouse.fetch_frame(con,
            """SELECT timeframe, count(DISTINCT symbol) AS symbols, count(*) AS bars,
                      min(ts)::VARCHAR AS first_bar, max(ts)::VARCHAR AS last_bar
               FROM raw.bars GROUP BY timeframe ORDER BY timeframe"""
        )
        rejected = warehouse.fetch_one(con, "SELECT count(*) FROM raw.bars_rejected")[0]
        symbols = warehouse.fetch_one(con, "SELECT count(*) FROM raw.symbols")[0]
        tables = warehouse.fetch_frame(con, 
            """SELECT table_schema || '.' || table_name AS t FROM information_schema.tables
               WHERE table_schema IN ('staging','intermediate','marts','ops') ORDER BY 1"""
        )["t"].to_list()
    finally:
        con.close()
    inst = runs.instance(settings)
    last = inst.get_runs(limit=1)
    info.update(
        symbols=symbols, rejected_rows=rejected, bars=bars.to_dicts(), models=tables,
        last_run=({"run_id": last[0].run_id, "job": last[0].job_name, "status": last[0].status.value}
                  if last else None),
        failed_checks=_failed_checks(inst),
    )
    if json_out:
        print_json(info)
        return
    console.print(f"[bold]TRADING_HOME[/] {settings.home}")
    console.print(frame_table(bars, title=f"bars ({symbols} symbols, {rejected} rejected rows)"))
    if info["last_run"]:
        lr = info["last_run"]
        console.print(f"last run: {lr['job']} {lr['run_id'][:8]} [{'green' if lr['status'] == 'SUCCESS' else 'red'}]{lr['status']}[/]")
    if info["failed_checks"]:
        console.print("[red]failed checks:[/] " + ", ".join(info["failed_checks"]))
    else:
        console.print("[green]all asset checks passing[/]")
    if tables:
        console.print(f"models: {len(tables)} tables/views in staging/intermediate/marts/ops")


def _failed_checks(inst) -> list[str]:
    from trading_pipeline import runs

    failed = []
    for checks_def in runs.definitions().asset_checks or []:
        for key in checks_def.check_keys:
            hist = inst.event_log_storage.get_asset_check_execution_history(key, limit=1)
            if hist and hist[0].event and hist[0].event.asset_check_evaluation and not hist[0].event.asset_check_evaluation.passed:
                failed.append(f"{key.asset_key.to_user_string()}:{key.name}")
    return failed


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A SQL query; the warehouse is opened read-only.")],
    json_out: JsonOpt = False,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    limit: Annotated[int, typer.Option(help="Rows shown in the table view.")] = 200,
) -> None:
    """Run ad-hoc SQL on the warehouse (read-only) and print a table, JSON or CSV."""
    import duckdb

    from trading_pipeline import warehouse

    settings = get_settings()
    try:
        con = warehouse.connect(settings.warehouse_path, read_only=True)
    except FileNotFoundError as exc:
        fail(str(exc))
    try:
        df = con.sql(query).pl()
    except duckdb.Error as exc:
        fail(str(exc).splitlines()[0], "schemas: raw, staging, intermediate, marts, ops; "
             "try: trading sql \"SHOW ALL TABLES\"", code=2)
    finally:
        con.close()
    if json_out:
        print_json(df.to_dicts())
    elif csv:
        print(df.write_csv(), end="")
    else:
        console.print(frame_table(df, max_rows=limit))


# ----------------------------------------------------------------------------- demo

@app.command()
def demo(
    symbols: Annotated[int, typer.Option(help="Synthetic symbols beside the real GOOG/EURUSD bars.")] = 20,
    json_out: JsonOpt = False,
) -> None:
    """Run the whole pipeline on the bundled sample market (no accounts needed)."""
    from trading_pipeline import runs
    from trading_pipeline.sources import sample

    settings = get_settings()
    steps = [
        ("daily bars", "ingest_daily_bars", "raw__bars_daily", sample.DAILY_START, sample.DAILY_END),
        ("intraday bars (1m synthetic)", "ingest_intraday_bars", "raw__bars_intraday", sample.INTRADAY_START, sample.INTRADAY_END),
        ("intraday bars (1h EURUSD)", "ingest_intraday_bars", "raw__bars_intraday", date(2017, 4, 17), date(2018, 2, 9)),
    ]
    summary: dict = {"home": str(settings.home), "steps": []}
    with _progress() as progress:
        task = progress.add_task("demo pipeline", total=len(steps))
        for label, job, op, start, end in steps:
            progress.update(task, description=label)
            t0 = time.perf_counter()
            result = runs.run_job(job, settings, run_config={"ops": {op: {"config": {"source": "sample", "synthetic_symbols": symbols}}}},
                                  start=start, end=end)
            md = _materialization_metadata(result)
            summary["steps"].append({"step": label, "run_id": result.run_id, "success": result.success,
                                     "seconds": round(time.perf_counter() - t0, 2), **md,
                                     "failed_checks": runs.failed_checks(result)})
            if not result.success:
                progress.stop()
                fail(f"{label}: {runs.failure_message(result)}")
            progress.advance(task)
    if json_out:
        print_json(summary)
        return
    for s in summary["steps"]:
        console.print(f"[green]✓[/] {s['step']}: {s.get('rows_loaded', 0):,} bars loaded, "
                      f"{s.get('rows_rejected', 0):,} rejected, {s['seconds']} s (run {s['run_id'][:8]})")
    console.print("next: [bold].venv/bin/trading status[/], [bold].venv/bin/trading sql \"SELECT * FROM raw.symbols\"[/], "
                  "[bold]make up[/] for the Dagster UI")


def _register_commands() -> None:
    from trading_pipeline.cli import orders_cmds

    orders_cmds.register(app)


_register_commands()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
