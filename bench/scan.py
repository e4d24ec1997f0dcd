"""Benchmark the scan: dbt alone (full build, incremental one-session scan), the same
incremental scan through the CLI a user runs, and the indicator stage vs TA-Lib.

    .venv/bin/python bench/scan.py                       # 5,000 symbols x 10 years (~12.6M bars)
    .venv/bin/python bench/scan.py --symbols 500 --years 2
    .venv/bin/python bench/scan.py --symbols 20 --years 2 --json     # quick check, one JSON object
    .venv/bin/python bench/scan.py --skip-cli            # dbt alone (the core) only
    .venv/bin/python bench/scan.py --warehouse file    # the DuckDB-file layout, for comparison

dbt alone (the core): synthetic daily bars (all but the last session) are written to a fresh
warehouse; ``dbt run`` builds every model (full build) and ``dbt test`` runs the data tests once,
timed separately; the last session is appended and ``dbt run`` runs again (incremental
one-day scan). ``--command build`` times ``dbt build`` (models + tests, what the scan jobs run)
for both instead. The indicator stage (``int_indicators``, from dbt's run_results.json) is
compared with raw TA-Lib over the same arrays, in this process.

CLI path (unless ``--skip-cli``), same bars, as subprocesses with their own fresh TRADING_HOME,
timed by the wall clock: ``trading ingest <history> --json`` (a Parquet folder, ``--files``
files), ``trading scan --date <last history session> --json`` (the first, full scan),
``trading ingest <last session>.parquet --json``, then ``trading scan --date <last session>
--json``: the incremental one-session end-of-day scan a user runs. A file-loaded home has no
source to fetch from, so ``trading scan`` runs the stored scan job (dbt build + publish). The
ingests must report every bar loaded (else exit 1). Printed: each command's wall clock, the
seconds its Dagster run reports, the run's dbt step, and the incremental scan against dbt alone
for the same incremental step measured above.

Targets: full < 60 s, incremental < 10 s, indicators <= 3x TA-Lib; CLI (issue 13): incremental
``trading scan`` <= 3 x dbt alone + 5 s, and at 5,000 symbols x 10 years <= 15 s wall with
dbt <= 5 s. ``--json`` prints every figure as one JSON object on stdout (the lines go to stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import talib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _cli  # noqa: E402
from trading_pipeline.marketdata.sources.synthetic import SyntheticBarSource  # noqa: E402
from trading_pipeline.marketdata.warehouse import upsert_bars, writer  # noqa: E402
from trading_pipeline.scans import dbt_runner  # noqa: E402


def make_bars(n_symbols: int, years: int, end: date) -> pl.DataFrame:
    start = date(end.year - years, end.month, end.day)
    bars = SyntheticBarSource(n_symbols).fetch_bars(None, start, end, "1d")
    return bars.with_columns(pl.col("ts").dt.date().alias("session_date"))


def raw_talib_seconds(bars: pl.DataFrame, store: bool = False) -> float:
    """The same TA-Lib calls the indicator model makes, per series, on numpy arrays.

    ``store=True`` also copies every result into full-length output columns (what any
    consumer of the values has to do); ``False`` discards them (pure TA-Lib time).
    """
    bars = bars.sort("symbol", "ts")
    sym = bars["symbol"].to_numpy()
    h, lo, c, v = (bars[k].to_numpy() for k in ("high", "low", "close", "volume"))
    starts = np.flatnonzero(np.r_[True, sym[1:] != sym[:-1]])
    ends = np.r_[starts[1:], len(sym)]
    t0 = time.perf_counter()
    out = [np.empty(len(c)) for _ in range(14)] if store else None
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        cs = c[a:b]
        res = [
            talib.SMA(cs, 20), talib.SMA(cs, 50), talib.SMA(cs, 200),
            talib.EMA(cs, 12), talib.EMA(cs, 26), talib.RSI(cs, 14),
            *talib.MACD(cs, 12, 26, 9), *talib.BBANDS(cs, 20, 2.0, 2.0),
            talib.ATR(h[a:b], lo[a:b], cs, 14), talib.SMA(v[a:b], 20),
        ]
        if out is not None:
            for dst, r in zip(out, res, strict=True):
                dst[a:b] = r
    return time.perf_counter() - t0


def load_indicator_model():
    """The dbt Python model's module, so its compute step can be timed in this process."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "dbt_project/models/intermediate/int_indicators.py"
    spec = importlib.util.spec_from_file_location("int_indicators", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_compute_seconds(bars: pl.DataFrame) -> float:
    """The model's compute step (TA-Lib per series + CPR) on the same bars, in this process."""
    module = load_indicator_model()
    bars = bars.sort("symbol", "timeframe", "ts")
    module.compute_indicators(bars.head(1000))  # warm up imports
    t0 = time.perf_counter()
    module.compute_indicators(bars)
    return time.perf_counter() - t0


def model_times(target: Path) -> dict[str, float]:
    results = json.loads((target / "run_results.json").read_text())["results"]
    return {
        r["unique_id"].split(".")[-1]: r["execution_time"]
        for r in results
        if r["unique_id"].startswith("model.")
    }


def dbt_build(warehouse: Path | str, target: Path, args: list[str]) -> float:
    env = dbt_runner.dbt_env(warehouse)
    env["DBT_TARGET_PATH"] = str(target)
    env["DBT_LOG_PATH"] = str(target / "logs")
    import subprocess

    cmd = dbt_runner.dbt_command(args, warehouse)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-6000:], proc.stderr[-3000:])
        raise SystemExit(f"dbt {' '.join(args)} failed")
    return elapsed


def cli_scan(history: pl.DataFrame, last: pl.DataFrame, tmp: Path, opts, say, dbt_inc: float) -> dict:
    """The same history and last session through ``trading ingest`` and ``trading scan``."""
    home = tmp / "cli" / "home"
    prev_session, last_session = history["ts"].max().date(), last["ts"].max().date()
    t0 = time.perf_counter()
    files = _cli.write_bar_files(history, tmp / "cli" / "history", files=opts.files)
    _cli.write_bar_files(last, tmp / "cli" / "last", files="1")
    last_file = tmp / "cli" / "last" / "part-0000.parquet"
    say(f"cli: wrote {history.height:,} history bars to {len(files)} Parquet file(s) and "
        f"{last.height:,} bars of {last_session} to one ({time.perf_counter() - t0:.1f}s); home {home}")

    def report(label: str, run: _cli.CliRun) -> None:
        say(f"cli {label}: {run.seconds:.1f}s wall (its Dagster run(s): {_cli.run_seconds(run):.1f}s)")

    load = _cli.run_cli(["ingest", str(tmp / "cli" / "history")], home, opts.warehouse)
    _cli.check_loaded(load, history.height)
    report(f"`trading ingest` history ({history.height:,} bars)", load)
    full = _cli.run_cli(["scan", "--date", str(prev_session)], home, opts.warehouse)
    report(f"`trading scan --date {prev_session}` (first scan: full build + publish)", full)
    append = _cli.run_cli(["ingest", str(last_file)], home, opts.warehouse)
    _cli.check_loaded(append, last.height)
    report(f"`trading ingest` last session ({last.height:,} bars)", append)
    inc = _cli.run_cli(["scan", "--date", str(last_session)], home, opts.warehouse)
    steps = _cli.step_seconds(home, inc.out["run_id"], opts.warehouse)
    dbt_step = sum(v for k, v in steps.items() if "dbt" in k) or None
    report(f"`trading scan --date {last_session}` (incremental one-session scan)", inc)
    say("  its steps: " + (", ".join(f"{k} {v:.1f}s" for k, v in steps.items()) or "unreadable")
        + f"; {len(inc.out.get('signals', []))} signals")
    target = _cli.target_seconds(dbt_inc)
    met = inc.seconds <= target
    full_size = opts.symbols >= 5000 and opts.years >= 10
    eod_met = inc.seconds <= 15 and dbt_inc <= 5
    say(f"incremental scan: cli {inc.seconds:.1f}s wall vs dbt alone (`dbt {opts.command}`) {dbt_inc:.1f}s: "
        f"{inc.seconds / dbt_inc:.1f}x; target cli <= 3 x dbt + 5 s = {target:.1f}s: {'met' if met else 'NOT met'}")
    if opts.command == "run":
        say("  (the scan job runs `dbt build`, models + tests; --command build times dbt alone the same way)")
    say(f"EOD target (5,000 x 10y: cli <= 15 s wall, dbt <= 5 s): {'met' if eod_met else 'NOT met'}"
        + ("" if full_size else f" at this size ({opts.symbols} x {opts.years}y; the target is for 5,000 x 10y)"))
    return {
        "cli_files": len(files), "cli_ingest_history_s": round(load.seconds, 2),
        "cli_ingest_history_run_s": round(_cli.run_seconds(load), 2),
        "cli_ingest_history_bars_per_s": round(history.height / load.seconds),
        "cli_first_scan_s": round(full.seconds, 2), "cli_first_scan_run_s": round(_cli.run_seconds(full), 2),
        "cli_ingest_last_s": round(append.seconds, 2), "cli_ingest_last_run_s": round(_cli.run_seconds(append), 2),
        "cli_scan_s": round(inc.seconds, 2), "cli_scan_run_s": round(_cli.run_seconds(inc), 2),
        "cli_scan_steps": steps, "cli_scan_dbt_step_s": dbt_step, "cli_scan_signals": len(inc.out.get("signals", [])),
        "cli_scan_session": str(last_session), "cli_vs_dbt": round(inc.seconds / dbt_inc, 1),
        "cli_target_s": round(target, 2), "cli_target_met": met,
        "eod_target": "cli_scan_s <= 15 and incremental_s <= 5 at 5,000 x 10y", "eod_target_met": eod_met,
        "eod_target_size": full_size,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=5000)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--end", type=date.fromisoformat, default=date(2025, 12, 31))
    ap.add_argument("--command", default="run", choices=["build", "run"],
                    help="dbt command to time (build = models + data tests)")
    ap.add_argument("--keep", action="store_true", help="keep the temp warehouse")
    ap.add_argument("--warehouse", default="lake", choices=["lake", "file"],
                    help="a DuckLake (the default warehouse) or a DuckDB file (the layout before it)")
    ap.add_argument("--skip-cli", action="store_true", help="dbt alone only: no `trading ingest` / `trading scan`")
    ap.add_argument("--files", default="10",
                    help="Parquet files the CLI's history is split into: a number, or 'symbol' (one per symbol)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object (the lines to stderr)")
    opts = ap.parse_args()
    if opts.files != "symbol" and not opts.files.isdigit():
        ap.error("--files: a number or 'symbol'")

    def say(line: str) -> None:
        print(line, file=sys.stderr if opts.json else sys.stdout, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench_scan_"))
    warehouse = (f"ducklake:sqlite:{tmp / 'warehouse' / 'catalog.sqlite'}" if opts.warehouse == "lake"
                 else tmp / "warehouse.duckdb")
    target = tmp / "target"

    t0 = time.perf_counter()
    bars = make_bars(opts.symbols, opts.years, opts.end)
    last_ts = bars["ts"].max()
    history, last = bars.filter(pl.col("ts") < last_ts), bars.filter(pl.col("ts") == last_ts)
    with writer(warehouse) as con:
        upsert_bars(con, "raw.bars_daily", history, "synthetic")
    say(f"data: {bars.height:,} bars, {opts.symbols} symbols x {opts.years} years "
        f"(generated + loaded in {time.perf_counter() - t0:.1f}s)")

    # parse once so neither timing includes a cold manifest build
    dbt_build(warehouse, target, ["parse"])

    full = dbt_build(warehouse, target, [opts.command])
    full_models = model_times(target)
    say(f"full {opts.command}: {full:.1f}s  (models: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in full_models.items()) + ")")

    tests = None
    if opts.command == "run":
        tests = dbt_build(warehouse, target, ["test"])
        say(f"dbt test (all data tests, full-size tables): {tests:.1f}s")

    with writer(warehouse) as con:
        upsert_bars(con, "raw.bars_daily", last, "synthetic")
    inc = dbt_build(warehouse, target, [opts.command])
    inc_models = model_times(target)
    say(f"incremental one-session {opts.command}: {inc:.1f}s  (models: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in inc_models.items()) + ")")

    cli = {} if opts.skip_cli else cli_scan(history, last, tmp, opts, say, inc)

    load_indicator_model()  # same numpy allocation settings for every measurement below
    raw = raw_talib_seconds(bars)
    raw_stored = raw_talib_seconds(bars, store=True)
    compute = model_compute_seconds(bars)
    stage = full_models["int_indicators"]
    say(f"raw TA-Lib storing its 14 output columns: {raw_stored:.2f}s; model compute step / that: "
        f"{compute / raw_stored:.1f}x")
    say(f"raw TA-Lib over the same arrays: {raw:.2f}s; the model's compute step "
        f"(compute_indicators: TA-Lib + CPR + bookkeeping): {compute:.2f}s, ratio {compute / raw:.1f}x; "
        f"whole int_indicators model incl. DuckDB read + write: {stage:.2f}s, ratio {stage / raw:.1f}x")
    summary = {
        "bench": "scan",
        "bars": bars.height, "symbols": opts.symbols, "years": opts.years, "warehouse": opts.warehouse,
        "command": opts.command, "full_s": round(full, 2), "tests_s": tests and round(tests, 2),
        "incremental_s": round(inc, 2),
        "raw_talib_s": round(raw, 3), "raw_talib_stored_s": round(raw_stored, 3),
        "compute_s": round(compute, 3), "compute_vs_stored_ratio": round(compute / raw_stored, 2),
        "compute_ratio": round(compute / raw, 2), "indicator_model_s": round(stage, 3),
        "model_ratio": round(stage / raw, 2), "full_models": full_models, "incremental_models": inc_models,
        **cli,
    }
    print(json.dumps(summary), flush=True)
    if not opts.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        say(f"kept {tmp}")


if __name__ == "__main__":
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    main()
