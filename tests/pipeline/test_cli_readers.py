"""The CLI's reading commands and `trading scan` as a user runs them (subprocesses, real
DuckDB files, real dbt and Dagster runs): bad scan input refused before any run, tables that
stay readable, readers that never fail a scan, a home's own data source, and the state a
killed run leaves, as `trading status` reports it."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from tests.scans.runs import scan_daily_script
from trading_pipeline.marketdata import warehouse
from trading_pipeline.serving.publish import publish_snapshot
from trading_pipeline.settings import Settings

pytestmark = [pytest.mark.timeout(900)]
TRADING = [sys.executable, "-m", "trading_pipeline.cli.main"]
SRC = {"source": "sample", "synthetic_symbols": 3}


def _env(home: Path, **extra) -> dict:
    return {**os.environ, "TRADING_HOME": str(home), "COLUMNS": "120", **extra}


def cli(home: Path, *args: str, timeout: float = 600, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([*TRADING, *args], env=_env(home, **extra), capture_output=True, text=True, timeout=timeout)


def _runs(home: Path) -> int:
    db = home / "dagster" / "history" / "runs.db"
    if not db.exists():
        return 0
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        con.close()


# ---- issue 20.3: scan edge cases -----------------------------------------------------------


def test_scan_refuses_bad_input_before_any_run(tmp_path):
    home = tmp_path / "home"  # empty: the bundled sample is its source
    cases = [
        (["--date", "2030-01-02"], "outside the bundled sample's daily data", "nearest session: 2013-03-01"),
        (["--date", "2013-01-19"], "(Saturday) is not an XNYS session", "nearest sessions: 2013-01-18 and 2013-01-22"),
        (["--date", "2013-01-21"], "(Monday) is not an XNYS session", "2013-01-18 and 2013-01-22"),
        (["--date", "2013-03-01", "--symbol", "NOPE"], "unknown symbol 'NOPE'", "GOOG"),
        (["--date", "01/03/2013"], "--date must be YYYY-MM-DD", ""),
    ]
    for args, said, near in cases:
        t0 = time.monotonic()
        r = cli(home, "scan", *args)
        took = time.monotonic() - t0
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert lines[0].startswith("error:") and said in lines[0], lines
        assert near in r.stderr and "Traceback" not in r.stderr and len(lines) <= 2, lines
        assert took < 20, f"{args}: refused after {took:.1f} s"
        j = cli(home, "scan", *args, "--json")
        assert j.returncode == 2 and said in json.loads(j.stdout)["error"], j.stdout
    assert _runs(home) == 0  # refused before any Dagster run


# ---- issue 20.4: sql output ------------------------------------------------------------------


def _published_home(tmp_path: Path) -> Path:
    """A home with a warehouse and its published snapshot (no Dagster run needed)."""
    home = tmp_path / "home"
    lake = Settings(home=home).warehouse_path  # the default DuckLake under the home
    with warehouse.writer(lake) as con:
        con.execute("CREATE TABLE marts.signals AS SELECT 'SYM' || i AS symbol, i::DOUBLE AS score, "
                    "'long CRP score ' || i || ': ' || repeat('close at 91% of range, volume 2175400, ', 12) AS reason, "
                    "[i, i + 1] AS levels, {'a': i, 'b': 'x'} AS detail FROM range(5) t(i)")
        publish_snapshot(lake, home / "serving", con=con)
    return home


def test_sql_nested_and_long_values(tmp_path):
    home = _published_home(tmp_path)
    r = cli(home, "sql", "SHOW ALL TABLES", "--csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    sig = next(x for x in rows if x["name"] == "signals")
    assert json.loads(sig["column_names"]) == ["symbol", "score", "reason", "levels", "detail"]
    r = cli(home, "sql", "SELECT levels, detail FROM marts.signals ORDER BY score LIMIT 1", "--csv")
    assert r.returncode == 0 and r.stdout.splitlines()[1] == '"[0, 1]","{""a"": 0, ""b"": ""x""}"', r.stdout
    j = json.loads(cli(home, "sql", "SELECT levels, detail FROM marts.signals ORDER BY score LIMIT 1", "--json").stdout)
    assert j == [{"levels": [0, 1], "detail": {"a": 0, "b": "x"}}]
    # the table: one line per row, long cells cut with an ellipsis, within the terminal's width
    r = cli(home, "sql", "SELECT * FROM marts.signals ORDER BY score")
    assert r.returncode == 0, r.stderr
    body = [line for line in r.stdout.splitlines() if line.startswith("│")]
    assert len(body) == 5 and all("…" in line for line in body), r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 120
    assert '{"a": 0' in r.stdout  # nested values as text


# ---- issue 21.1: readers never fail a scan ---------------------------------------------------


def _dbt_child_running(pid: int) -> bool:
    out = subprocess.run(["ps", "-o", "args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return "dbt" in out and "build" in out


def test_readers_in_a_loop_never_fail_a_scan(tmp_path):
    home = tmp_path / "home"
    env = _env(home)
    subprocess.run([sys.executable, "-c", scan_daily_script(SRC, date(2012, 9, 3), date(2013, 2, 15))], env=env,
                   check=True, timeout=600, capture_output=True)
    scan = subprocess.Popen([*TRADING, "scan", "--date", "2013-02-19", "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    readers = [("sql", "SELECT count(*) AS n FROM raw.bars"), ("status", "--json"),
               ("sql", "SELECT symbol, count(*) AS n FROM marts.signals GROUP BY ALL")]
    failed, done, long_reader = [], 0, None
    while scan.poll() is None:
        if long_reader is None and _dbt_child_running(scan.pid):
            # the repro: a long analyst query started as the dbt child starts up
            long_reader = subprocess.Popen(
                [*TRADING, "sql", "SELECT count(*) AS n FROM range(600000000) t(x) WHERE x % 7 = 3"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args in readers:
            r = cli(home, *args, timeout=120)
            done += 1
            if r.returncode != 0:
                failed.append((args, r.stderr[-500:]))
    out, err = scan.communicate(timeout=600)
    assert scan.returncode == 0, err[-3000:]
    assert json.loads(out)["session"] == "2013-02-19"
    assert failed == [] and done >= 3, failed
    assert long_reader is not None, "the scan finished before its dbt step was seen"
    _, lerr = long_reader.communicate(timeout=300)
    assert long_reader.returncode == 0, lerr[-1000:]
    st = json.loads(cli(home, "status", "--json").stdout)
    assert st["last_run"]["status"] == "SUCCESS" and st["warnings"] == []

    # a reader holding a read transaction open on the lake for the whole run: nothing waits
    # for it (DuckLake readers hold no lock; its SQLite catalog is in WAL mode), the run succeeds
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from trading_pipeline.marketdata import warehouse as wh\n"
                               f"c = wh.connect({Settings(home=home).warehouse_path!r}, read_only=True)\n"
                               "c.execute('BEGIN'); c.sql('SELECT count(*) FROM marts.signals').fetchall()\n"
                               "print('held', flush=True); time.sleep(300)"],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = subprocess.run([sys.executable, "-c", "from trading_pipeline import runs\n"
                            "from trading_pipeline.settings import get_settings\n"
                            "r = runs.run_job('scan_daily_stored', get_settings())\n"
                            "assert r.success, runs.failure_message(r)\n"], env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert holder.poll() is None  # still holding its transaction when the run finished
    finally:
        holder.kill()
        holder.wait(timeout=30)
    help_ = " ".join(cli(home, "sql", "--help").stdout.split())
    assert "--as-of" in help_ and "--print-attach" in help_


# ---- issue 21.6: a home's own source ---------------------------------------------------------


def test_file_loaded_home_never_gets_the_sample(tmp_path):
    from trading_pipeline.marketdata.sources.synthetic import SyntheticBarSource

    home = tmp_path / "home"
    bars = SyntheticBarSource(["ACME"]).fetch_bars(None, date(2012, 3, 1), date(2013, 2, 22), "1d")
    f = tmp_path / "ACME.parquet"
    bars.select("symbol", "ts", "open", "high", "low", "close", "volume").write_parquet(f)
    r = cli(home, "ingest", str(f), "--json")
    assert r.returncode == 0, r.stderr

    r = cli(home, "scan", "--date", "2013-02-22", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["source"] == "stored bars" and {s["symbol"] for s in out["signals"]} <= {"ACME"}
    symbols = json.loads(cli(home, "sql", "SELECT DISTINCT symbol FROM raw.bars", "--json").stdout)
    assert symbols == [{"symbol": "ACME"}]  # no GOOG, no SYN
    sig = json.loads(cli(home, "sql", "SELECT DISTINCT symbol FROM marts.signals", "--json").stdout)
    assert {s["symbol"] for s in sig} <= {"ACME"}
    assert json.loads((home / "source.json").read_text())["source"] == "files"
    # a session it has no bars for, and no source to fetch it from: refused, clearly
    r = cli(home, "scan", "--date", "2013-02-26")
    assert r.returncode == 2 and "no daily bars for 2013-02-26" in r.stderr and "trading ingest" in r.stderr, r.stderr
    r = cli(home, "scan", "--date", "2013-02-22", "--symbol", "GOOG")
    assert r.returncode == 2 and "unknown symbol 'GOOG'" in r.stderr and "ACME" in r.stderr, r.stderr


# ---- issue 21.7: state after faults ----------------------------------------------------------


def test_status_reports_a_dead_run_and_stale_marts(tmp_path):
    from trading_pipeline import run_state
    from trading_pipeline.settings import Settings

    home = tmp_path / "home"
    env = _env(home)
    subprocess.run([sys.executable, "-c", scan_daily_script(SRC, date(2012, 9, 3), date(2013, 2, 15))], env=env,
                   check=True, timeout=600, capture_output=True)
    settings = Settings(home=home)
    assert run_state.warnings_for(run_state.read_state(settings)) == []
    proc = subprocess.Popen([*TRADING, "scan", "--date", "2013-02-19"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, caught = time.monotonic() + 300, False
    while time.monotonic() < deadline and proc.poll() is None:
        m = run_state.read_state(settings)["materialized"]
        if m.get(run_state.INDICATORS, 0) > m.get(run_state.SIGNALS, 0):
            os.killpg(proc.pid, signal.SIGKILL)  # indicators rebuilt, signals not yet
            caught = True
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert caught, "the scan got past the indicators without being caught"
    st = json.loads(cli(home, "status", "--json").stdout)
    assert st["last_run"]["status"] == "STARTED" and "is gone" in st["last_run"]["dead"], st
    assert any("marts out of date with indicators" in w for w in st["warnings"]), st
    text = cli(home, "status").stdout
    assert "STARTED (dead)" in text and "re-run `trading scan`" in " ".join(text.split())
    # the fast reader and Dagster's API agree
    fast = run_state.read_state(settings)
    api = run_state._read_api(settings)
    assert fast["last_run"] == api["last_run"] | {"start_time": fast["last_run"]["start_time"],
                                                  "end_time": fast["last_run"]["end_time"]}
    assert fast["failed_checks"] == api["failed_checks"]
    # the re-run heals both
    r = cli(home, "scan", "--date", "2013-02-19")
    assert r.returncode == 0, r.stderr[-3000:]
    st = json.loads(cli(home, "status", "--json").stdout)
    assert st["last_run"]["status"] == "SUCCESS" and "dead" not in st["last_run"] and st["warnings"] == [], st


def test_failed_checks_fast_reader_matches_dagster(tmp_path, monkeypatch):
    """A stored bad bar fails the blocking checks; the fast reader and the API agree."""
    from trading_pipeline import run_state, runs
    from trading_pipeline.settings import Settings, get_settings

    home = tmp_path / "home"
    monkeypatch.setenv("TRADING_HOME", str(home))
    get_settings.cache_clear()
    try:
        f = tmp_path / "GOOG.csv"
        pl.DataFrame({"date": ["2013-02-27", "2013-02-28"], "open": [1.0, 1.0], "high": [2.0, 2.0],
                      "low": [0.5, 0.5], "close": [1.5, 1.5], "volume": [10.0, 10.0]}).write_csv(f)
        cfg = {"ops": {"raw__bars_daily": {"config": {"source": "files", "path": str(f)}}}}
        assert runs.run_job("ingest_daily_bars", get_settings(), run_config=cfg,
                            start=date(2013, 2, 25), end=date(2013, 3, 1)).success
        con = warehouse.connect(Settings(home=home).warehouse_path)
        con.execute("INSERT INTO raw.bars_daily VALUES ('GOOG','1d','2013-02-26','2013-02-26',1,0.5,2,1,1,'manual',now())")
        con.close()
        assert not runs.run_job("ingest_daily_bars", get_settings(), run_config=cfg,
                                start=date(2013, 2, 25), end=date(2013, 3, 1)).success
        settings = Settings(home=home)
        fast, api = run_state.read_state(settings), run_state._read_api(settings)
        assert fast["failed_checks"] == api["failed_checks"] == ["raw/bars_daily:high_low_consistent"]
        assert fast["last_run"]["status"] == api["last_run"]["status"] == "FAILURE"
    finally:
        get_settings.cache_clear()
