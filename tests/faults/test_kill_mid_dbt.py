"""`kill -9` of a scan while dbt builds: the re-run completes, nothing lost or duplicated.

The scan run (bars → dbt → snapshot) is killed with its whole process group the moment its
dbt child process is running. The next scan must reap the dead run (its duckdb_writer pool
slot), finish, and leave marts equal to those of a clean build of the same bars.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date

import pytest

from tests.scans.runs import scan_daily_script
from trading_pipeline import runs
from trading_pipeline.marketdata import warehouse
from trading_pipeline.settings import Settings, get_settings

pytestmark = [pytest.mark.timeout(600)]
SRC = {"source": "sample", "synthetic_symbols": 3}


def marts(home) -> dict:
    con = warehouse.connect(Settings(home=home).warehouse_path, read_only=True)
    try:
        out = {}
        for t, key in (("marts.signals", "scan, symbol, timeframe, ts, kind"), ("marts.indicators_daily", "symbol, ts")):
            n, k = warehouse.fetch_one(con, f"SELECT count(*), count(DISTINCT ({key})) FROM {t}")
            out[t] = (n, k)
        out["signals"] = warehouse.fetch_frame(
            con, "SELECT scan, symbol, ts, kind, round(score, 9) AS s FROM marts.signals ORDER BY ALL")
        out["sma"] = warehouse.fetch_frame(
            con, "SELECT symbol, ts, round(sma_20, 9) AS a, round(rsi_14, 9) AS b FROM marts.indicators_daily ORDER BY ALL")
        return out
    finally:
        con.close()


def _dbt_child_running(pid: int) -> bool:
    out = subprocess.run(["ps", "-o", "args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return "dbt" in out and "build" in out


def test_kill_9_during_dbt_build_then_rerun(trading_home, tmp_path):
    env = {**os.environ, "TRADING_HOME": str(trading_home)}
    subprocess.run([sys.executable, "-c", scan_daily_script(SRC, date(2012, 6, 1), date(2013, 2, 15))], env=env,
                   check=True, timeout=300, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-c", scan_daily_script(SRC, date(2013, 2, 19), date(2013, 3, 1))], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not _dbt_child_running(proc.pid):
        time.sleep(0.05)
    assert proc.poll() is None, "the scan finished before dbt could be caught running"
    time.sleep(1.0)  # let dbt get into its models
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    # the re-run completes (the dead run's pool slot is reaped) ...
    done = subprocess.run([sys.executable, "-c", scan_daily_script(SRC, date(2013, 2, 19), date(2013, 3, 1))], env=env,
                          timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    after = marts(trading_home)
    for table in ("marts.signals", "marts.indicators_daily"):
        n, distinct = after[table]
        assert n == distinct and n > 0, f"{table}: {n} rows, {distinct} distinct keys"

    # ... and equals a clean build of the same bars in a fresh home
    clean = tmp_path / "clean"
    env2 = {**os.environ, "TRADING_HOME": str(clean)}
    for start, end in ((date(2012, 6, 1), date(2013, 2, 15)), (date(2013, 2, 19), date(2013, 3, 1))):
        subprocess.run([sys.executable, "-c", scan_daily_script(SRC, start, end)], env=env2, check=True, timeout=300,
                       capture_output=True)
    ref = marts(clean)
    assert after["signals"].equals(ref["signals"])
    assert after["sma"].equals(ref["sma"])
    inst = runs.instance(get_settings())
    import dagster as dg

    assert not inst.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
