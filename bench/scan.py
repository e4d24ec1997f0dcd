"""Benchmark the dbt scan: full build, incremental one-session scan, indicator stage vs TA-Lib.

    .venv/bin/python bench/scan.py                       # 5,000 symbols x 10 years (~12.6M bars)
    .venv/bin/python bench/scan.py --symbols 500 --years 2
    .venv/bin/python bench/scan.py --warehouse file    # the DuckDB-file layout, for comparison

Steps: synthetic daily bars (all but the last session) are written to a fresh warehouse;
``dbt run`` builds every model (full build) and ``dbt test`` runs the data tests once,
timed separately; the last session is appended and ``dbt run`` runs again (incremental
one-day scan). ``--command build`` times ``dbt build`` (models + tests) for both instead. The indicator stage
(``int_indicators``, from dbt's run_results.json) is compared with raw TA-Lib over the same
arrays, in this process. Targets: full < 60 s, incremental < 10 s, indicators <= 3x TA-Lib.
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
    opts = ap.parse_args()

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
    print(f"data: {bars.height:,} bars, {opts.symbols} symbols x {opts.years} years "
          f"(generated + loaded in {time.perf_counter() - t0:.1f}s)")

    # parse once so neither timing includes a cold manifest build
    dbt_build(warehouse, target, ["parse"])

    full = dbt_build(warehouse, target, [opts.command])
    full_models = model_times(target)
    print(f"full {opts.command}: {full:.1f}s  (models: "
          + ", ".join(f"{k} {v:.1f}s" for k, v in full_models.items()) + ")")

    tests = None
    if opts.command == "run":
        tests = dbt_build(warehouse, target, ["test"])
        print(f"dbt test (all data tests, full-size tables): {tests:.1f}s")

    with writer(warehouse) as con:
        upsert_bars(con, "raw.bars_daily", last, "synthetic")
    inc = dbt_build(warehouse, target, [opts.command])
    inc_models = model_times(target)
    print(f"incremental one-session {opts.command}: {inc:.1f}s  (models: "
          + ", ".join(f"{k} {v:.1f}s" for k, v in inc_models.items()) + ")")

    load_indicator_model()  # same numpy allocation settings for every measurement below
    raw = raw_talib_seconds(bars)
    raw_stored = raw_talib_seconds(bars, store=True)
    compute = model_compute_seconds(bars)
    stage = full_models["int_indicators"]
    print(f"raw TA-Lib storing its 14 output columns: {raw_stored:.2f}s; model compute step / that: "
          f"{compute / raw_stored:.1f}x")
    print(f"raw TA-Lib over the same arrays: {raw:.2f}s; the model's compute step "
          f"(compute_indicators: TA-Lib + CPR + bookkeeping): {compute:.2f}s, ratio {compute / raw:.1f}x; "
          f"whole int_indicators model incl. DuckDB read + write: {stage:.2f}s, ratio {stage / raw:.1f}x")
    summary = {
        "bars": bars.height, "symbols": opts.symbols, "years": opts.years, "warehouse": opts.warehouse,
        "command": opts.command, "full_s": round(full, 2), "tests_s": tests and round(tests, 2),
        "incremental_s": round(inc, 2),
        "raw_talib_s": round(raw, 3), "raw_talib_stored_s": round(raw_stored, 3),
        "compute_s": round(compute, 3), "compute_vs_stored_ratio": round(compute / raw_stored, 2),
        "compute_ratio": round(compute / raw, 2), "indicator_model_s": round(stage, 3),
        "model_ratio": round(stage / raw, 2), "full_models": full_models, "incremental_models": inc_models,
    }
    print(json.dumps(summary))
    if not opts.keep:
        for p in sorted(tmp.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        tmp.rmdir()
    else:
        print(f"kept {tmp}")


if __name__ == "__main__":
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    main()
