"""Ingest throughput: bars/second through the validation + upsert core, a Dagster run, and the CLI.

    .venv/bin/python bench/ingest.py                                     # full size (minutes)
    .venv/bin/python bench/ingest.py --daily-symbols 20 --intraday-symbols 5   # quick check
    .venv/bin/python bench/ingest.py --skip-cli --skip-dagster           # the core only
    .venv/bin/python bench/ingest.py --files symbol --json               # one Parquet file per symbol; JSON

Cases (synthetic bars, deterministic):
  daily    5,000 symbols x 1 year of daily bars         (~1.26M bars; --daily-years 10: 12.6M)
  intraday   500 symbols x 1 session of 1-minute bars   (~195k bars)
  csv          1 symbol x 20 years of daily bars, one CSV (~5,000 bars, ~5,000 sessions)

Each case is one Dagster run whatever its number of sessions (the bar assets are not
partitioned: docs/decisions.md #16).

For each, in one process and on the same bars:
  core       ``ingest()``: validate + one-transaction upsert into a fresh warehouse of the kind
             the CLI writes (``--warehouse``: a DuckLake, the default, or a DuckDB file), after
             one warm-up load of a few bars elsewhere (imports, quality suite, extensions), then
             a re-ingest of the same bars (idempotent replace);
  dagster    the same load as a real in-process Dagster run of the asset (synthetic source:
             fetch + validate + upsert + the blocking GX checks; daily and intraday only);
  cli        the bars written as a user's export (Parquet: a ``symbol``, a ``date`` or UTC ``ts``
             column and OHLCV, split into ``--files`` files; the csv case: ``SYN0000.csv``
             without a symbol column), then ``trading ingest <path> --json`` run as a
             subprocess with its own fresh TRADING_HOME, timed by the wall clock (start-up,
             file checks, the Dagster run(s) and their checks). Its ``loaded`` must equal the
             bars written (else the bench exits 1). "cli run s" is what the command reports
             for its Dagster run(s), the rest is start-up and file checking.

Target (issue 13): cli <= 3 x core + 5 s ("met" column). Core and CLI bars/s, their ratio and
the target are printed per case; ``--json`` prints all figures as one JSON object on stdout
(the tables go to stderr).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")

from bench import _cli  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--daily-symbols", type=int, default=5000)
    ap.add_argument("--intraday-symbols", type=int, default=500)
    ap.add_argument("--daily-years", type=int, default=1, help="years of the daily case (ending 2023-12-29)")
    ap.add_argument("--csv-years", type=int, default=20, help="years of the one-symbol CSV case (0: skip it)")
    ap.add_argument("--files", default="10",
                    help="Parquet files the daily/intraday bars are split into: a number, or 'symbol' (one per symbol)")
    ap.add_argument("--warehouse", default="lake", choices=["lake", "file"],
                    help="warehouse of the core and the CLI's home: a DuckLake (the default) or a DuckDB file")
    ap.add_argument("--skip-cli", action="store_true", help="do not run `trading ingest`")
    ap.add_argument("--skip-dagster", action="store_true", help="do not run the in-process Dagster job")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object (tables to stderr)")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args()
    if args.files != "symbol" and not args.files.isdigit():
        ap.error("--files: a number or 'symbol'")
    out = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    os.environ["TRADING_HOME"] = str(tmp / "home")
    if args.warehouse == "file":
        os.environ["TRADING_WAREHOUSE"] = str(tmp / "home" / "warehouse.duckdb")
    else:
        os.environ.pop("TRADING_WAREHOUSE", None)
    from trading_pipeline import runs
    from trading_pipeline.marketdata import warehouse
    from trading_pipeline.marketdata.ingest import Batch, ingest
    from trading_pipeline.marketdata.sources.synthetic import SyntheticBarSource
    from trading_pipeline.settings import get_settings

    cases = [
        ("daily", args.daily_symbols, "1d", date(2024 - args.daily_years, 1, 3), date(2023, 12, 29), "ingest_daily_bars", "raw__bars_daily"),
        ("intraday", args.intraday_symbols, "1m", date(2023, 6, 1), date(2023, 6, 1), "ingest_intraday_bars", "raw__bars_intraday"),
    ]
    if args.csv_years:
        cases.append(("csv", 1, "1d", date(2025 - args.csv_years, 12, 31), date(2025, 12, 31), None, None))
    say(f"warehouse: {args.warehouse}; Parquet files: {args.files}; cli: {'skipped' if args.skip_cli else _cli.TRADING}")
    say(f"{'case':<9} {'bars':>10} {'generate s':>11} {'core s':>8} {'core bars/s':>12} "
        f"{'re-ingest bars/s':>17} {'dagster s':>10} {'dagster bars/s':>15} {'dagster/core':>13}")
    # warm up once (imports, the quality suite, the warehouse extensions) so the core figures
    # are the steady-state cost of the load itself; the CLI pays its own start-up on purpose
    warm = SyntheticBarSource(1).fetch_bars(None, date(2023, 1, 3), date(2023, 1, 31), "1d")
    with warehouse.writer(f"ducklake:sqlite:{tmp / 'warm' / 'catalog.sqlite'}" if args.warehouse == "lake"
                          else tmp / "warm.duckdb") as con:
        ingest(con, [Batch("bench", warm)], default_exchange="XNYS")
    results = []
    for name, n, tf, start, end, job, op in cases:
        src = SyntheticBarSource(n)
        t0 = time.perf_counter()
        bars = src.fetch_bars(None, start, end, tf)
        t_gen = time.perf_counter() - t0

        location = (f"ducklake:sqlite:{tmp / f'core-{name}' / 'catalog.sqlite'}" if args.warehouse == "lake"
                    else tmp / f"core-{name}.duckdb")
        with warehouse.writer(location) as con:
            t0 = time.perf_counter()
            res = ingest(con, [Batch("bench", bars)], default_exchange="XNYS")
            t_core = time.perf_counter() - t0
            assert res.loaded == bars.height and res.rejected == 0, res.as_dict()
            t0 = time.perf_counter()
            ingest(con, [Batch("bench", bars)], default_exchange="XNYS")
            t_re = time.perf_counter() - t0

        t_dag = None
        if job and not args.skip_dagster:
            get_settings.cache_clear()
            t0 = time.perf_counter()
            r = runs.run_job(job, get_settings(), run_config={"ops": {op: {"config": {
                "source": "synthetic", "synthetic_symbols": n, "timeframes": [tf]}}}}, start=start, end=end)
            t_dag = time.perf_counter() - t0
            assert r.success, runs.failure_message(r)
        dag_cols = (f"{t_dag:>10.2f} {bars.height / t_dag:>15,.0f} {t_dag / t_core:>12.1f}x" if t_dag
                    else f"{'-':>10} {'-':>15} {'-':>13}")
        say(f"{name:<9} {bars.height:>10,} {t_gen:>11.2f} {t_core:>8.2f} {bars.height / t_core:>12,.0f} "
            f"{bars.height / t_re:>17,.0f} {dag_cols}")
        row = {"case": name, "bars": bars.height, "symbols": n, "timeframe": tf, "start": str(start), "end": str(end),
               "generate_s": round(t_gen, 2), "core_s": round(t_core, 3), "core_bars_per_s": round(bars.height / t_core),
               "reingest_s": round(t_re, 3), "reingest_bars_per_s": round(bars.height / t_re),
               "dagster_s": t_dag and round(t_dag, 2), "dagster_bars_per_s": t_dag and round(bars.height / t_dag),
               "dagster_vs_core": t_dag and round(t_dag / t_core, 1)}

        if not args.skip_cli:
            case_dir = tmp / f"cli-{name}"
            t0 = time.perf_counter()
            if name == "csv":
                paths = _cli.write_bar_files(bars, case_dir / "files", files="symbol", fmt="csv")
                path = paths[0]
            else:
                paths = _cli.write_bar_files(bars, case_dir / "files", files=args.files)
                path = case_dir / "files"
            t_write = time.perf_counter() - t0
            run = _cli.run_cli(["ingest", str(path)], case_dir / "home", args.warehouse)
            _cli.check_loaded(run, bars.height)
            target = _cli.target_seconds(t_core)
            row.update(cli_files=len(paths), cli_format="csv" if name == "csv" else "parquet",
                       write_files_s=round(t_write, 2), cli_s=round(run.seconds, 2),
                       cli_run_s=round(_cli.run_seconds(run), 2), cli_loaded=run.out["loaded"],
                       cli_bars_per_s=round(bars.height / run.seconds), cli_vs_core=round(run.seconds / t_core, 1),
                       target_s=round(target, 2), target_met=run.seconds <= target)
        results.append(row)
        del bars

    if not args.skip_cli:
        say("")
        say("CLI path: `trading ingest <path> --json` in a subprocess, fresh TRADING_HOME, wall clock; "
            "target cli <= 3 x core + 5 s")
        say(f"{'case':<9} {'bars':>10} {'files':>6} {'core s':>8} {'core bars/s':>12} {'cli s':>8} "
            f"{'cli run s':>10} {'cli bars/s':>11} {'cli/core':>9} {'target s':>9} {'met':>4}")
        for r in results:
            say(f"{r['case']:<9} {r['bars']:>10,} {r['cli_files']:>6} {r['core_s']:>8.2f} {r['core_bars_per_s']:>12,} "
                f"{r['cli_s']:>8.2f} {r['cli_run_s']:>10.2f} {r['cli_bars_per_s']:>11,} {r['cli_vs_core']:>8.1f}x "
                f"{r['target_s']:>9.2f} {'yes' if r['target_met'] else 'NO':>4}")
    if args.json:
        print(json.dumps({"bench": "ingest", "warehouse": args.warehouse, "files": args.files,
                          "target": "cli_s <= 3 * core_s + 5", "cases": results}), flush=True)
    if args.keep:
        say(f"kept {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
