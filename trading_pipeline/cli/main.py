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
        bars = pl.concat(
            [p.bars.select("ts", "timeframe", "row_number", pl.lit(p.path.name).alias("file")) for p in parsed],
            how="vertical_relaxed",
        )
        dated = bars.filter(pl.col("ts").is_not_null())
        if dated.is_empty():
            progress.stop()
            fail(f"{path}: no rows with a timestamp", code=2)
        symbols = {s for p in parsed for s in p.bars["symbol"].drop_nulls().unique().to_list()}
        outside = _outside_loadable_range(dated)
        if outside:
            progress.stop()
            fail(*outside, code=2)
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
            failures = _check_failures(result)
            summary["runs"].append({"job": job, "run_id": result.run_id, "success": result.success,
                                     "seconds": round(time.perf_counter() - t0, 2),
                                     "failed_checks": runs.failed_checks(result),
                                     "check_failures": failures})
            # what the run stored, failed or not: the bar step commits before the checks run
            summary["loaded"] += md.get("rows_loaded", 0)
            summary["rejected"] += md.get("rows_rejected", 0)
            for k, v in (md.get("rejected_by_rule") or {}).items():
                summary["rejected_by_rule"][k] = summary["rejected_by_rule"].get(k, 0) + v
            if not result.success:
                progress.stop()
                _ingest_failed(result, summary, failures, stored="rows_loaded" in md,
                               loaded_symbols=symbols, json_out=json_out)
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


def _outside_loadable_range(dated: pl.DataFrame) -> tuple[str, str] | None:
    """Rows the session partitions cannot hold (before the first session) or that cannot be
    real yet (after today): refused before any run, so nothing is stored and a stray 2030 row
    does not make the run span every session up to it."""
    from datetime import UTC, datetime

    from trading_pipeline.calendars import CALENDAR_START

    first = date.fromisoformat(CALENDAR_START)
    today = datetime.now(UTC).date()
    early = dated.filter(pl.col("ts").dt.date() < first)
    late = dated.filter(pl.col("ts").dt.date() > today)
    if early.is_empty() and late.is_empty():
        return None

    def where(df: pl.DataFrame) -> str:
        shown = ", ".join(f"{f} row {r} ({ts:%Y-%m-%d})" for f, r, ts in df.select("file", "row_number", "ts").head(3).iter_rows())
        return shown + (f" and {df.height - 3:,} more" if df.height > 3 else "")

    parts = []
    if early.height:
        parts.append(f"{early.height:,} bar(s) before {first}, the first session this warehouse holds: {where(early)}")
    if late.height:
        parts.append(f"{late.height:,} bar(s) after today ({today}): {where(late)}")
    return ("; ".join(parts) + "; nothing was loaded",
            "remove those rows (or load from a copy of the file that starts at "
            f"{first} or later) and run the same command again")


def _check_failures(result) -> list[dict]:
    """Failed bar checks of a run, one entry per rule: how many rows, which symbols and
    sessions, and example bars (from each session's check result)."""
    by_check: dict[str, dict] = {}
    for ev in result.get_asset_check_evaluations():
        if ev.passed:
            continue
        entry = by_check.setdefault(ev.check_name, {"check": ev.check_name, "rows": 0, "symbols": set(),
                                                    "sessions": set(), "bars": []})
        if ev.partition:
            entry["sessions"].add(ev.partition)
        failures = ev.metadata.get("failures")
        failures = failures.value if failures is not None else []
        # a rule has several expectations (high >= open, high >= close ...) that one bad bar
        # can all break: count the bars once per session
        entry["rows"] += max((f.get("unexpected_count") or 0 for f in failures), default=0)
        for f in failures:
            for bar in f.get("bars", []):
                entry["symbols"].add(bar.split(" ", 1)[0])
                if bar not in entry["bars"]:
                    entry["bars"].append(bar)
    return [{**e, "symbols": sorted(e["symbols"]), "sessions": sorted(e["sessions"]), "bars": e["bars"][:5]}
            for e in by_check.values()]


def _ingest_failed(result, summary: dict, failures: list[dict], *, stored: bool, loaded_symbols: set[str],
                   json_out: bool) -> None:
    """Say what a failed load run stored and why it failed, in a few lines, then exit 1."""
    from trading_pipeline import runs

    if failures:
        error = "quality checks failed"
        lines = [
            f"  {f['check']}: {f['rows']:,} row(s); symbols {', '.join(f['symbols']) or '?'}; "
            f"sessions {f['sessions'][0] if f['sessions'] else '?'}"
            + (f" .. {f['sessions'][-1]}" if len(f["sessions"]) > 1 else "")
            + (f"; e.g. {', '.join(f['bars'][:3])}" if f["bars"] else "")
            + ("" if set(f["symbols"]) & loaded_symbols or not f["symbols"] else " (not from this load)")
            for f in failures
        ]
        foreign = all(f["symbols"] and not set(f["symbols"]) & loaded_symbols for f in failures)
    else:
        error = runs.failure_message(result).splitlines()[0]
        lines = []
    if stored:
        hint = (f"{summary['loaded']:,} bar(s) from this load are stored; scans and orders stay blocked "
                "for the failing sessions until their checks pass: fix the bars named above (a bar "
                "loaded again replaces the stored one) and run the same command again")
        if failures and foreign:
            hint = (f"{summary['loaded']:,} bar(s) from this load are stored and passed; the failing bars "
                    "were already in the warehouse (stored earlier or written another way). Scans and "
                    "orders stay blocked for those sessions until they are fixed: load corrected bars for "
                    "those symbols (a bar loaded again replaces the stored one)")
        if not failures:
            hint = (f"{summary['loaded']:,} bar(s) from this load are stored but were not checked; run "
                    "the same command again (loads are idempotent) to check them")
    else:
        hint = "nothing from this load was stored; see the run in the Dagster UI (make up)"
    if json_out:
        summary.update(error=error, stored=stored, hint=hint)
        print_json(summary)
        raise typer.Exit(1)
    fail(f"run {result.run_id} failed: {error}" + ("".join("\n" + ln for ln in lines)), hint)


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
    if not warehouse.exists(settings.warehouse_path):
        if json_out:
            info["bars"] = []
            print_json(info)
            return
        fail(f"no warehouse at {settings.warehouse_path}", "run `trading demo` or `trading ingest PATH` first")
    try:
        con = warehouse.connect(settings.warehouse_path, read_only=True)
    except warehouse.WarehouseLocationError as exc:
        fail(str(exc))
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
    """Checks whose latest result failed; for a partitioned check (the bar checks: one result
    per session), whose latest result failed for any session."""
    from trading_pipeline import runs

    failed = []
    for checks_def in runs.definitions().asset_checks or []:
        for spec in checks_def.check_specs:
            partitioned = spec.partitions_def is not None
            for info in inst.event_log_storage.get_asset_check_partition_info([spec.key]):
                # (results of the other kind are from before the check was (un)partitioned)
                if (info.partition_key is not None) == partitioned and info.latest_execution_status.value == "FAILED":
                    failed.append(f"{spec.asset_key.to_user_string()}:{spec.name}")
                    break
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
    except (FileNotFoundError, warehouse.WarehouseLocationError) as exc:
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


# ----------------------------------------------------------------------------- scan / rules

def _latest_session(settings, intraday: bool) -> date | None:
    from trading_pipeline import warehouse

    if not warehouse.exists(settings.warehouse_path):
        return None
    con = warehouse.connect(settings.warehouse_path, read_only=True)
    try:
        row = warehouse.fetch_one(con, f"SELECT max(session_date) FROM raw.{'bars_intraday' if intraday else 'bars_daily'}")
    finally:
        con.close()
    return row[0] if row else None


def _session_signals(settings, session: date, symbol: str | None, intraday: bool) -> pl.DataFrame:
    from trading_pipeline import warehouse

    con = warehouse.connect(settings.warehouse_path, read_only=True)
    try:
        tf = "timeframe <> '1d'" if intraday else "timeframe = '1d'"
        params: list = [session]
        where = f"session_date = ? AND {tf}"
        if symbol:
            where += " AND symbol = ?"
            params.append(symbol.upper())
        return warehouse.fetch_frame(
            con,
            f"""SELECT symbol, timeframe, ts, kind, direction, round(score, 2) AS score, scan, reason
                FROM marts.signals WHERE {where} ORDER BY score DESC, symbol""",
            params,
        )
    finally:
        con.close()


@app.command()
def scan(
    date_: Annotated[str | None, typer.Option("--date", help="Session to scan (YYYY-MM-DD); default: the latest session in the warehouse.")] = None,
    symbol: Annotated[str | None, typer.Option(help="Only load and show this symbol.")] = None,
    intraday: Annotated[bool, typer.Option("--intraday", help="Scan intraday bars instead of daily.")] = False,
    until: Annotated[str | None, typer.Option(help="Intraday: only bars before this time (naive UTC ISO).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Materialize the scan for one session through Dagster (bars → dbt) and print its signals."""
    from trading_pipeline import runs

    settings = get_settings()
    if date_:
        try:
            session = date.fromisoformat(date_)
        except ValueError:
            fail(f"--date must be YYYY-MM-DD, got {date_!r}", code=2)
    else:
        session = _latest_session(settings, intraday)
        if session is None:
            fail("no bars in the warehouse and no --date given", "run `trading demo` or pass --date YYYY-MM-DD", code=2)
    job, op = ("scan_intraday", "raw__bars_intraday") if intraday else ("scan_daily", "raw__bars_daily")
    cfg: dict = {}
    if symbol:
        cfg["symbols"] = [symbol.upper()]
    if until and intraday:
        cfg["until"] = until
    with _progress() as progress:
        task = progress.add_task(f"{job} {session}", total=1)
        t0 = time.perf_counter()
        result = runs.run_job(job, settings, run_config={"ops": {op: {"config": cfg}}}, partition=runs.session_key(session))
        progress.advance(task)
    if not result.success:
        fail(f"scan run {result.run_id} failed: {runs.failure_message(result)}",
             "see the run in the Dagster UI (make up); failed bar checks block the scan on purpose")
    signals = _session_signals(settings, session, symbol, intraday)
    out = {"session": session, "run_id": result.run_id, "seconds": round(time.perf_counter() - t0, 2),
           "failed_checks": runs.failed_checks(result), "signals": signals.to_dicts()}
    if json_out:
        print_json(out)
        return
    view = signals.select("symbol", "timeframe", "kind", "score", "reason") if signals.height else signals
    console.print(frame_table(view, title=f"signals {session}{' ' + symbol.upper() if symbol else ''} "
                                             f"({'intraday' if intraday else 'daily'}, run {result.run_id[:8]})"))
    if signals.is_empty():
        console.print("no signals for this session")


@app.command()
def rules(
    path: Annotated[Path | None, typer.Option("--file", help="Rules file (default TRADING_RULES_FILE or ./rules.yaml).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the scans in the rules file and validate it (exit 2 with the problem if invalid)."""
    from trading_pipeline.rules import RulesError, dbt_vars, load_rules

    settings = get_settings()
    path = path or settings.rules_file
    try:
        loaded = load_rules(path)
    except (RulesError, FileNotFoundError) as exc:
        fail(str(exc), "fix the file; the previous rules stay in force until it validates", code=2)
    scans = dbt_vars(loaded)["scans"]
    if json_out:
        print_json({"file": str(path), "valid": True, "scans": scans})
        return
    rows = []
    for sc in scans:
        params = {k: v for k, v in sc.items()
                  if k not in ("name", "kind", "timeframes", "symbols", "fingerprint") and v is not None}
        rows.append({"scan": sc["name"], "kind": sc["kind"], "timeframes": ",".join(sc["timeframes"]),
                     "universe": "all" if not sc.get("symbols") else ",".join(sc["symbols"]),
                     "parameters": " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())})
    console.print(frame_table(pl.DataFrame(rows), title=f"{path} (valid, {len(scans)} scans)"))


# ----------------------------------------------------------------------------- demo

DEMO_TRADE_DAY = date(2013, 2, 22)


@app.command()
def demo(
    symbols: Annotated[int, typer.Option(help="Synthetic symbols beside the real GOOG/EURUSD bars.")] = 20,
    since: Annotated[str, typer.Option(help="First session of daily history to load (the sample starts 2004-08-19; "
                                       "each session is a Dagster partition, so more history takes longer).")] = "2010-01-04",
    json_out: JsonOpt = False,
) -> None:
    """Run the whole pipeline on the bundled sample market (no accounts needed).

    History up to 2013-02-22 → scan → orders from that day's signals → the next week's bars
    → scan → the paper broker fills the orders at the next open → portfolio and P&L.
    """
    from trading_pipeline import runs
    from trading_pipeline.sources import sample

    settings = get_settings()
    try:
        first = max(date.fromisoformat(since), sample.DAILY_START)
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
    with _progress() as progress:
        task = progress.add_task("demo pipeline", total=len(steps))
        for label, job, ops, start, end in steps:
            progress.update(task, description=label)
            t0 = time.perf_counter()
            cfg = {"ops": {op: {"config": c} for op, c in ops.items()}}
            result = runs.run_job(job, settings, run_config=cfg, start=start, end=end)
            md = _materialization_metadata(result)
            summary["steps"].append({"step": label, "job": job, "run_id": result.run_id, "success": result.success,
                                     "seconds": round(time.perf_counter() - t0, 2), **md,
                                     "failed_checks": runs.failed_checks(result)})
            if not result.success:
                progress.stop()
                fail(f"{label}: {runs.failure_message(result)}")
            progress.advance(task)
    summary["result"] = _demo_result(settings)
    if json_out:
        print_json(summary)
        return
    for s in summary["steps"]:
        extra = f"{s.get('rows_loaded', 0):,} bars loaded, {s.get('rows_rejected', 0):,} rejected" if "rows_loaded" in s else s["job"]
        console.print(f"[green]✓[/] {s['step']}: {extra}, {s['seconds']} s (run {s['run_id'][:8]})")
    r = summary["result"]
    console.print(f"signals: {r['signals']:,} in marts.signals; orders: {r['orders']}; "
                  f"positions: {r['positions']}; equity {r['equity']}")
    console.print("next: [bold].venv/bin/trading portfolio[/], [bold].venv/bin/trading orders[/], "
                  "[bold].venv/bin/trading scan --date 2013-03-01[/], [bold]make up[/] for the Dagster UI")


def _demo_result(settings) -> dict:
    from trading_pipeline import warehouse
    from trading_pipeline.ops_store import OpsStore

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
    from decimal import Decimal

    pf = store.portfolio(settings.account)
    prices = {s: Decimal(repr(c)) for s, c in closes.items()}
    return {"signals": n_signals, "orders": orders, "positions": len(pf.open_positions()),
            "equity": f"{pf.equity(prices):,.2f}"}


def _register_commands() -> None:
    from trading_api.cli import register as register_api
    from trading_pipeline.cli import backtest_cmd, orders_cmds

    orders_cmds.register(app)
    backtest_cmd.register(app)
    register_api(app)


_register_commands()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
