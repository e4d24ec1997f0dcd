"""Wall-clock of `trading status` (and a refused `trading scan`) as a user runs them.

    .venv/bin/python bench/cli.py                          # 5,000 symbols x 1 year (~1.26M daily bars)
    .venv/bin/python bench/cli.py --symbols 500 --home /tmp/bench-cli/home   # reuse a home

Builds a home through real Dagster runs (synthetic daily bars loaded, then a scan: dbt over
every bar, the serving snapshot published), unless ``--home`` already holds one. Then, each
as a subprocess: `trading status` idle (``--repeat`` times), `trading status` again and again
while a `trading scan` writes the warehouse, and a `trading scan` of a weekend day (refused
before any run). ``--pythonpath`` runs the CLI from another checkout (e.g. an export of an
older commit) against the same home, to compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = date(2023, 1, 3), date(2023, 12, 28)
SCAN_DAY = date(2023, 12, 29)


def build(home: Path, symbols: int) -> None:
    os.environ["TRADING_HOME"] = str(home)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    sys.path.insert(0, str(ROOT))
    from trading_pipeline import runs
    from trading_pipeline.settings import get_settings

    get_settings.cache_clear()
    cfg = {"ops": {"raw__bars_daily": {"config": {"source": "synthetic", "synthetic_symbols": symbols}}}}
    for job, start, end in (("ingest_daily_bars", START, END), ("scan_daily", END, END)):
        t0 = time.perf_counter()
        r = runs.run_job(job, get_settings(), run_config=cfg, start=start, end=end)
        assert r.success, runs.failure_message(r)
        print(f"built: {job} {start}..{end} in {time.perf_counter() - t0:.1f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=5000)
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pythonpath", default="", help="checkout to run the CLI from (default: this one)")
    args = ap.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="bench-cli-")) / "home"
    if not (home / "warehouse.duckdb").exists():
        build(home, args.symbols)
    env = {**os.environ, "TRADING_HOME": str(home), "GX_ANALYTICS_ENABLED": "false",
           "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    trading = [sys.executable, "-m", "trading_pipeline.cli.main"]
    cwd = args.pythonpath or str(ROOT)

    def run(cmd):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd)
        return time.perf_counter() - t0, r.returncode

    print(f"home {home}; CLI from {cwd}")
    help_s = [run([*trading, "--help"])[0] for _ in range(args.repeat)]
    print(f"trading --help (startup floor)   median {statistics.median(help_s):.2f} s  max {max(help_s):.2f} s")
    idle = [run([*trading, "status"]) for _ in range(args.repeat)]
    print(f"trading status, idle             median {statistics.median(t for t, _ in idle):.2f} s  "
          f"max {max(t for t, _ in idle):.2f} s  exit codes {sorted({c for _, c in idle})}")

    scan = subprocess.Popen([*trading, "scan", "--date", SCAN_DAY.isoformat()], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    busy = []
    while scan.poll() is None:
        busy.append(run([*trading, "status"]))
    _, err = scan.communicate()
    if busy:
        print(f"trading status, during a scan    median {statistics.median(t for t, _ in busy):.2f} s  "
              f"max {max(t for t, _ in busy):.2f} s  n={len(busy)}  exit codes {sorted({c for _, c in busy})}")
    print(f"the scan itself: exit {scan.returncode}" + (f" ({err.strip().splitlines()[-1]})" if scan.returncode else ""))
    t, code = run([*trading, "scan", "--date", "2023-12-30"])
    print(f"trading scan --date 2023-12-30 (a Saturday): exit {code} after {t:.2f} s")


if __name__ == "__main__":
    main()
