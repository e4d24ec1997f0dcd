"""`trading ingest`: load bars through a Dagster run, with the quality checks' verdict."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trading_pipeline.cli.output import JsonOpt, console, fail, print_json, progress_bar
from trading_pipeline.settings import get_settings

if TYPE_CHECKING:  # polars is imported by the commands that use it (0.4 s at start-up)
    import polars as pl



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
    import polars as pl

    from trading_pipeline import runs
    from trading_pipeline.marketdata.sources.files import BarFileError, discover, read_bar_file

    settings = get_settings()
    try:
        files = discover(path)
    except BarFileError as exc:
        fail(str(exc), "give a .csv/.parquet file or a folder holding some", code=2)
    parsed = []
    with progress_bar() as progress:
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
        outside = _outside_loadable_range(dated)
        if outside:
            progress.stop()
            fail(*outside, code=2)
        refused = _warehouse_refusal(settings)
        if refused:
            progress.stop()
            fail(*refused, code=2)
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
            md = materialization_metadata(result)
            refused = _load_refused(result)  # the suite failed on the load's bars: rolled back
            failures = refused if refused is not None else _check_failures(result)
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
                _ingest_failed(result, summary, failures, stored=refused is None and "rows_loaded" in md,
                               json_out=json_out)
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
    """Rows older than the platform holds (``TRADING_HISTORY_START``: the exchange calendars
    start there) or that cannot be real yet (after today): refused before any run, so nothing
    is stored and a stray 2030 row does not make the run span every session up to it."""
    from datetime import UTC, datetime

    import polars as pl

    from trading_pipeline.marketdata.calendars import calendar_start

    first = calendar_start()
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
        parts.append(f"{early.height:,} bar(s) before {first}, the earliest date this platform holds: {where(early)}")
    if late.height:
        parts.append(f"{late.height:,} bar(s) after today ({today}): {where(late)}")
    fix = []
    if early.height:
        fix.append(f"the earliest loadable date is {first}: set TRADING_HISTORY_START to an earlier date "
                   "(e.g. TRADING_HISTORY_START=1900-01-02) or drop the rows before it")
    if late.height:
        fix.append("drop the rows dated after today (a bar cannot be in the future)")
    return ("; ".join(parts) + "; nothing was loaded",
            "; ".join(fix) + ", then run the same command again")


def _warehouse_refusal(settings) -> tuple[str, str] | None:
    """The warehouse cannot be opened (a lake's catalog unreachable or damaged, an extension
    missing): its error, before any run starts, so nothing is written."""
    from trading_pipeline.marketdata import extensions, warehouse

    try:
        warehouse.probe(settings.warehouse_path)
    except (warehouse.WarehouseLocationError, extensions.ExtensionMissing) as exc:
        return str(exc), "nothing was loaded; run the same command again once the warehouse opens"
    return None


def _load_refused(result) -> list[dict] | None:
    """The failed rules when a load was rolled back because the bar suite failed on the bars
    it was about to commit (ingest.LoadCheckError, the step's failure metadata), else None."""
    for event in result.all_events:
        data = event.step_failure_data if event.is_step_failure else None
        md = data.user_failure_data.metadata if data is not None and data.user_failure_data else {}
        if "check_failures" in md:
            return [{**f, "stored": False} for f in md["check_failures"].value]
    return None


def _check_failures(result) -> list[dict]:
    """Failed bar checks of a run, one entry per rule: how many rows, which symbols and
    sessions, and example bars (from the check's result)."""
    by_check: dict[str, dict] = {}
    for ev in result.get_asset_check_evaluations():
        if ev.passed:
            continue
        entry = by_check.setdefault(ev.check_name, {"check": ev.check_name, "rows": 0, "symbols": set(),
                                                    "sessions": set(), "bars": []})
        failures = ev.metadata.get("failures")
        failures = failures.value if failures is not None else []
        # a rule has several expectations (high >= open, high >= close ...) that one bad bar
        # can all break: count the bars once
        entry["rows"] += max((f.get("unexpected_count") or 0 for f in failures), default=0)
        for f in failures:
            entry["sessions"].update(f.get("sessions", []))
            for bar in f.get("bars", []):
                entry["symbols"].add(bar.split(" ", 1)[0])
                if bar not in entry["bars"]:
                    entry["bars"].append(bar)
    return [{**e, "symbols": sorted(e["symbols"]), "sessions": sorted(e["sessions"]), "bars": e["bars"][:5]}
            for e in by_check.values()]


def _ingest_failed(result, summary: dict, failures: list[dict], *, stored: bool, json_out: bool) -> None:
    """Say what a failed load run stored and why it failed, in a few lines, then exit 1 (2
    when the warehouse could not be opened).

    ``stored`` is False when the bar step failed before its commit (the load rolled back,
    e.g. because the bar suite failed on its own bars): then nothing from it is stored.
    A load only commits bars that passed the suite, so a check failing after the commit is
    about other stored bars of the loaded symbols in the loaded sessions."""
    from trading_pipeline import runs
    from trading_pipeline.marketdata import quality
    lines = ["  " + ln for ln in quality.describe_failures(failures)]
    unopened = runs.warehouse_error(result)
    if unopened:  # the warehouse could not be opened: a setting to fix (exit 2), nothing stored
        hint = "nothing from this load was stored; run the same command again once the warehouse opens"
        if json_out:
            summary.update(error=unopened, stored=False, hint=hint)
            print_json(summary)
            raise typer.Exit(2)
        fail(f"run {result.run_id} failed: {unopened}", hint, code=2)
    if failures and not stored:
        error = "the bars of this load fail the quality checks"
    elif failures:
        error = "quality checks failed"
    else:
        error = runs.failure_message(result).splitlines()[0]
    n = summary["loaded"]
    if not stored:
        hint = ("nothing from this load was stored (its transaction was rolled back): fix the bars named "
                "above and run the same command again" if failures else
                "nothing from this load was stored (its transaction was rolled back); see the run in the "
                "Dagster UI (make up)")
    elif failures:
        hint = (f"{n:,} bar(s) from this load are stored and passed the checks before their commit; the "
                "bars named above were already stored for these symbols (earlier, or written another way). "
                "Scans and orders stay blocked for those sessions until they are fixed: load corrected "
                "bars (a bar loaded again replaces the stored one) or delete them")
    else:
        hint = (f"{n:,} bar(s) from this load are stored and passed the bar suite before their commit, but "
                "the run failed after it, so Dagster has no check results for them: run the same command "
                "again (loads are idempotent) to record them")
    if json_out:
        summary.update(error=error, stored=stored, hint=hint)
        print_json(summary)
        raise typer.Exit(1)
    fail(f"run {result.run_id} failed: {error}" + ("".join("\n" + ln for ln in lines)), hint)


def materialization_metadata(result) -> dict:
    out: dict = {}
    seen: set = set()
    for ev in result.get_asset_materialization_events():
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


def register(app: typer.Typer) -> None:
    app.command()(ingest)
