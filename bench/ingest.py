"""Ingest throughput: bars/second through the validation + upsert core and a full Dagster run.

    .venv/bin/python bench/ingest.py [--daily-symbols 5000] [--intraday-symbols 500]

Cases (synthetic bars, deterministic):
  daily    5,000 symbols x 1 year of daily bars   (~1.26M bars, 252 session partitions)
  intraday   500 symbols x 1 session of 1-minute bars (~195k bars, 1 partition)
For each: the core (`ingest()`: validate + one-transaction upsert into a fresh DuckDB file),
a re-ingest of the same bars (idempotent replace), and the same load as a real in-process
Dagster run of the asset (fetch + validate + upsert + the blocking GX checks), in one process.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--daily-symbols", type=int, default=5000)
    ap.add_argument("--intraday-symbols", type=int, default=500)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    os.environ["TRADING_HOME"] = str(tmp / "home")
    from trading_pipeline import runs
    from trading_pipeline.marketdata import warehouse
    from trading_pipeline.marketdata.ingest import Batch, ingest
    from trading_pipeline.marketdata.sources.synthetic import SyntheticBarSource
    from trading_pipeline.settings import get_settings

    cases = [
        ("daily", args.daily_symbols, "1d", date(2023, 1, 3), date(2023, 12, 29), "ingest_daily_bars", "raw__bars_daily"),
        ("intraday", args.intraday_symbols, "1m", date(2023, 6, 1), date(2023, 6, 1), "ingest_intraday_bars", "raw__bars_intraday"),
    ]
    print(f"{'case':<9} {'bars':>10} {'generate s':>11} {'core s':>8} {'core bars/s':>12} "
          f"{'re-ingest bars/s':>17} {'dagster s':>10} {'dagster bars/s':>15} {'core/dagster':>13}")
    for name, n, tf, start, end, job, op in cases:
        src = SyntheticBarSource(n)
        t0 = time.perf_counter()
        bars = src.fetch_bars(None, start, end, tf)
        t_gen = time.perf_counter() - t0

        db = tmp / f"core-{name}.duckdb"
        with warehouse.writer(db) as con:
            t0 = time.perf_counter()
            res = ingest(con, [Batch("bench", bars)], default_exchange="XNYS")
            t_core = time.perf_counter() - t0
            assert res.loaded == bars.height and res.rejected == 0, res.as_dict()
            t0 = time.perf_counter()
            ingest(con, [Batch("bench", bars)], default_exchange="XNYS")
            t_re = time.perf_counter() - t0

        get_settings.cache_clear()
        t0 = time.perf_counter()
        r = runs.run_job(job, get_settings(), run_config={"ops": {op: {"config": {"source": "synthetic", "synthetic_symbols": n, "timeframes": [tf]}}}},
                         start=start, end=end)
        t_dag = time.perf_counter() - t0
        assert r.success, runs.failure_message(r)
        print(f"{name:<9} {bars.height:>10,} {t_gen:>11.2f} {t_core:>8.2f} {bars.height / t_core:>12,.0f} "
              f"{bars.height / t_re:>17,.0f} {t_dag:>10.2f} {bars.height / t_dag:>15,.0f} {t_dag / t_core:>12.1f}x")


if __name__ == "__main__":
    main()
