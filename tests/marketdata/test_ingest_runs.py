"""Bars reach the warehouse only through real Dagster runs, idempotently and atomically."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime

import dagster as dg
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from typer.testing import CliRunner

from trading_pipeline import runs
from trading_pipeline.cli.main import app
from trading_pipeline.defs.bars import CHECK_GROUPS, DAILY, END_TAG, START_TAG
from trading_pipeline.marketdata import warehouse
from trading_pipeline.settings import get_settings

GOOD = "Date,Open,High,Low,Close,Volume\n2013-02-27,794.8,804.8,791.1,799.8,2522000\n2013-02-28,801.1,806.2,799.0,801.2,2265800\n2013-03-01,797.8,807.1,796.2,806.2,2175400\n"
runner = CliRunner()


def table(sql):
    con = warehouse.connect(get_settings().warehouse_path, read_only=True)
    try:
        return warehouse.fetch_frame(con, sql)
    finally:
        con.close()


def ingest_file(path, **cfg):
    return runs.run_job(
        "ingest_daily_bars", get_settings(),
        run_config={"ops": {"raw__bars_daily": {"config": {"source": "files", "path": str(path), **cfg}}}},
        start=date(2013, 2, 25), end=date(2013, 3, 8),
    )


def test_ingest_twice_changes_nothing(trading_home, tmp_path):
    f = tmp_path / "GOOG.csv"
    f.write_text(GOOD)
    r1 = ingest_file(f)
    assert r1.success
    first = table("SELECT symbol, ts, open, high, low, close, volume, session_date FROM raw.bars_daily ORDER BY ts")
    assert first.height == 3
    assert table("SELECT symbol, exchange, calendar FROM raw.symbols").rows() == [("GOOG", "XNYS", "XNYS")]
    r2 = ingest_file(f)
    assert r2.success
    assert table("SELECT symbol, ts, open, high, low, close, volume, session_date FROM raw.bars_daily ORDER BY ts").equals(first)
    # the run is recorded in the instance under TRADING_HOME: one materialization for the
    # whole range, all seven checks passing once each over what it loaded
    evals = r2.get_asset_check_evaluations()
    assert sorted(e.check_name for e in evals) == sorted(CHECK_GROUPS)
    assert all(e.passed and e.partition is None for e in evals)
    mats = r2.get_asset_materialization_events()
    assert len(mats) == 1 and mats[0].partition is None
    md = mats[0].event_specific_data.materialization.metadata
    assert md["window"].value == "2013-02-25 00:00:00 .. 2013-03-11 00:00:00"
    assert {e.metadata["window"].value for e in evals} == {md["window"].value}
    assert r2.dagster_run.tags[START_TAG] == "2013-02-25" and r2.dagster_run.tags[END_TAG] == "2013-03-08"
    inst = runs.instance(get_settings())
    assert {r.run_id for r in inst.get_runs()} >= {r1.run_id, r2.run_id}


def test_bad_rows_rejected_with_reason_good_rows_loaded(trading_home, tmp_path):
    f = tmp_path / "GOOG.csv"
    f.write_text(GOOD + "2013-03-04,800,790,795,805,100\n2013-03-05,abc,810,795,805,100\n")
    assert ingest_file(f).success
    assert table("SELECT count(*) AS n FROM raw.bars_daily")["n"][0] == 3
    rej = table("SELECT source, row_number, rule, reason, run_id FROM raw.bars_rejected ORDER BY row_number")
    assert rej["row_number"].to_list() == [5, 6]
    assert rej["rule"].to_list() == ["high_low", "type"]
    assert rej["source"].to_list() == ["GOOG.csv", "GOOG.csv"]
    assert rej["run_id"][0]


def test_failed_load_leaves_warehouse_exactly_as_before(trading_home, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    (good / "GOOG.csv").write_text(GOOD)
    assert ingest_file(good).success
    before = table("SELECT * EXCLUDE (ingested_at) FROM raw.bars_daily ORDER BY ts")
    # a folder where one file is fine (and would change prices) and one is half-written
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "GOOG.csv").write_text(GOOD.replace("806.2,2175400", "999.0,1"))
    (mixed / "MSFT.csv").write_text(GOOD + "2013-03-04,27.8,2")
    result = ingest_file(mixed)
    assert not result.success
    assert "MSFT.csv, row 5" in runs.failure_message(result)
    assert table("SELECT * EXCLUDE (ingested_at) FROM raw.bars_daily ORDER BY ts").equals(before)
    assert table("SELECT count(*) AS n FROM raw.symbols")["n"][0] == 1


def check_executions(run_id: str) -> dict[tuple[str, str, str | None], str]:
    """Every row of Dagster's asset_check_executions for the run, (asset, check, partition)
    -> status, for every check the code location defines."""
    inst = runs.instance(get_settings())
    out = {}
    for key in runs.definitions().resolve_asset_graph().asset_check_keys:
        for rec in inst.event_log_storage.get_asset_check_execution_history(key, limit=10_000):
            if rec.run_id == run_id:
                out[(key.asset_key.to_user_string(), key.name, rec.partition)] = rec.status.value
    return out


def test_range_run_resolves_every_planned_check_execution(trading_home, tmp_path):
    """Regression: a run over a range of sessions left PLANNED rows in Dagster's
    asset_check_executions, never resolved (the UI listed them as skipped executions). Now a
    run of any length plans and resolves each check once."""
    f = tmp_path / "GOOG.csv"
    f.write_text(GOOD)
    result = ingest_file(f)
    assert result.success
    rows = check_executions(result.run_id)
    assert rows == {("raw/bars_daily", c, None): "SUCCEEDED" for c in CHECK_GROUPS}
    # nothing PLANNED anywhere in the instance
    inst = runs.instance(get_settings())
    planned = [
        (key, rec.partition)
        for key in runs.definitions().resolve_asset_graph().asset_check_keys
        for rec in inst.event_log_storage.get_asset_check_execution_history(
            key, limit=10_000, status={AssetCheckExecutionRecordStatus.PLANNED})
    ]
    assert planned == []
    # what the UI shows: each check's latest result is about this run's materialization
    mat = inst.fetch_materializations(dg.AssetRecordsFilter(DAILY), limit=1).records[0]
    assert mat.run_id == result.run_id
    for name in CHECK_GROUPS:
        rec = inst.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(DAILY, name), limit=1)[0]
        assert rec.run_id == result.run_id and rec.status.value == "SUCCEEDED"
        assert rec.evaluation.target_materialization_data.storage_id == mat.storage_id


def test_stored_bad_bars_fail_blocking_checks(trading_home, tmp_path):
    f = tmp_path / "GOOG.csv"
    f.write_text(GOOD)
    assert ingest_file(f).success
    # a bar that bypassed ingest (a manual INSERT): high below low, on a Saturday
    con = warehouse.connect(get_settings().warehouse_path)
    con.execute("""INSERT INTO raw.bars_daily VALUES ('GOOG','1d','2013-03-02','2013-03-02',1,0.5,2,1,1,'manual',now())""")
    con.close()
    result = ingest_file(f)
    assert not result.success  # blocking: the check step fails the run
    failed = set(runs.failed_checks(result))
    assert failed == {"raw/bars_daily:high_low_consistent", "raw/bars_daily:in_session"}
    # recorded once per check: FAILED for the two the bar breaks, each failure naming its
    # session (a Saturday: filed under Friday's, 2013-03-01) and bar; nothing left PLANNED
    rows = check_executions(result.run_id)
    bad = {"high_low_consistent", "in_session"}
    assert rows == {("raw/bars_daily", c, None): "FAILED" if c in bad else "SUCCEEDED" for c in CHECK_GROUPS}
    ev = next(e for e in result.get_asset_check_evaluations() if e.check_name == "high_low_consistent")
    assert not ev.passed and ev.blocking
    failures = ev.metadata["failures"].value
    assert {b for x in failures for b in x["bars"]} == {"GOOG 1d 2013-03-02 00:00:00"}
    assert {s for x in failures for s in x["sessions"]} == {"2013-03-01"}
    # `trading status` reports both, once each
    status = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert sorted(status["failed_checks"]) == sorted(failed)


def test_cli_ingest_json_and_status(trading_home, tmp_path):
    f = tmp_path / "GOOG.csv"
    f.write_text(GOOD + "2013-03-04,800,790,795,805,100\n")
    res = runner.invoke(app, ["ingest", str(f), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["loaded"] == 3 and out["rejected"] == 1 and out["rejected_by_rule"] == {"high_low": 1}
    status = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert status["bars"][0]["bars"] == 3 and status["symbols"] == 1
    assert status["last_run"]["status"] == "SUCCESS" and status["failed_checks"] == []
    rows = json.loads(runner.invoke(app, ["sql", "SELECT symbol, count(*) AS n FROM raw.bars GROUP BY 1", "--json"]).stdout)
    assert rows == [{"symbol": "GOOG", "n": 3}]
    csv = runner.invoke(app, ["sql", "SELECT symbol FROM raw.symbols", "--csv"]).stdout
    assert csv.splitlines() == ["symbol", "GOOG"]


def test_cli_sql_is_read_only_and_errors_are_clear(trading_home, tmp_path):
    f = tmp_path / "GOOG.csv"
    f.write_text(GOOD)
    assert runner.invoke(app, ["ingest", str(f)]).exit_code == 0
    res = runner.invoke(app, ["sql", "DELETE FROM raw.bars_daily"])
    assert res.exit_code == 2 and "read-only" in res.output.lower()
    assert table("SELECT count(*) AS n FROM raw.bars_daily")["n"][0] == 3


def test_cli_ingest_bad_file_exit_code_and_message(trading_home, tmp_path):
    f = tmp_path / "GOOG.csv"
    f.write_text("Date,Open,High,Low,Close\n2013-03-01,1,2,0.5,1.5\n")
    res = runner.invoke(app, ["ingest", str(f)])
    assert res.exit_code == 2
    assert "missing column(s): volume" in res.output and "nothing was loaded" in res.output


def _big_parquet(path, n_symbols, sessions):
    """Valid daily bars for many symbols over a few sessions (few partitions, many rows)."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(7)
    n = n_symbols * len(sessions)
    close = rng.uniform(20, 200, n)
    pl.DataFrame({
        "symbol": np.repeat([f"K{i:05d}" for i in range(n_symbols)], len(sessions)),
        "date": np.tile(np.array(sessions, dtype="datetime64[D]"), n_symbols),
        "open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
        "volume": rng.integers(1000, 100000, n).astype(float),
    }).write_parquet(path)
    return n


@pytest.mark.slow
def test_kill_9_mid_load_leaves_warehouse_consistent(trading_home, tmp_path):
    """`trading ingest` killed with SIGKILL while it writes is rolled back; the re-run completes."""
    from trading_pipeline.marketdata.calendars import session_dates

    env = {**os.environ, "TRADING_HOME": str(trading_home)}
    trading = [sys.executable, "-m", "trading_pipeline.cli.main"]
    small = tmp_path / "GOOG.csv"
    small.write_text(GOOD)
    subprocess.run([*trading, "ingest", str(small)], env=env, check=True, timeout=300, capture_output=True)
    before = table("SELECT count(*) AS n, sum(close) AS s FROM raw.bars_daily").row(0)
    assert before[0] == 3

    big = tmp_path / "big.parquet"
    n = _big_parquet(big, 12_000, session_dates("XNYS", date(2023, 1, 3), date(2023, 1, 31)))
    # DuckLake writes a big insert's Parquet files before the commit, so the lake's data
    # folder growing marks the write phase
    data = trading_home / "warehouse" / "data"

    def size() -> int:
        return sum(p.stat().st_size for p in data.rglob("*") if p.is_file())

    size0 = size()
    proc = subprocess.Popen([*trading, "ingest", str(big)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if size() > size0 + 1_000_000:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the load finished before it could be killed; make it bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert table("SELECT count(*) AS n, sum(close) AS s FROM raw.bars_daily").row(0) == before
    assert table("SELECT count(*) AS n FROM raw.symbols")["n"][0] == 1

    done = subprocess.run([*trading, "ingest", str(big), "--json"], env=env, timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["loaded"] == n
    after = table("SELECT count(*) AS n, count(DISTINCT (symbol, ts)) AS k FROM raw.bars_daily").row(0)
    assert after == (n + 3, n + 3)
    # the killed run was reaped: marked failed, its duckdb_writer pool slot freed
    import dagster as dg

    inst = runs.instance(get_settings())
    assert not inst.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    assert len(inst.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))) == 1


ORCL = "Date,Open,High,Low,Close,Volume\n2013-02-27,30,31,29,30.5,100000\n2013-02-28,30,31,29,30.5,100000\n"


def _trading(home, *args, timeout=300):
    env = {**os.environ, "TRADING_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "trading_pipeline.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_clean_file_loads_after_symbols_of_another_calendar(trading_home, tmp_path):
    """Issue 20.1: a clean file failed in_session after a scan had stored symbols of another
    calendar (GOOG on XNAS beside XNYS symbols): the check compared session dates by row
    position while they were computed calendar by calendar."""
    goog, orcl = tmp_path / "GOOG.csv", tmp_path / "ORCL.csv"
    goog.write_text(GOOD)
    orcl.write_text(ORCL)
    assert _trading(trading_home, "ingest", str(goog), "--exchange", "XNAS").returncode == 0
    res = _trading(trading_home, "ingest", str(orcl), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["loaded"] == 2
    assert table("SELECT symbol, count(*) AS n FROM raw.bars_daily GROUP BY 1 ORDER BY 1").rows() == [
        ("GOOG", 3), ("ORCL", 2)]


def _bad_bar(symbol, ts):
    """A bar written another way (a manual INSERT, not a load): high below low."""
    con = warehouse.connect(get_settings().warehouse_path)
    con.execute(f"INSERT INTO raw.bars_daily VALUES ('{symbol}','1d','{ts}','{ts[:10]}',1,0.5,2,1,1,'manual',now())")
    con.close()


def test_checks_judge_the_symbols_the_load_wrote_not_others_in_its_sessions(trading_home, tmp_path):
    """Issue 20.1: after a scan, a clean ORCL file failed its checks on bars of other symbols
    (SYN...) stored in the same sessions. A load's checks judge what it wrote: the stored bars
    of its symbols in its sessions."""
    orcl = tmp_path / "ORCL.csv"
    orcl.write_text(ORCL)
    assert _trading(trading_home, "ingest", str(orcl)).returncode == 0
    _bad_bar("ZZZZ", "2013-02-28")  # another symbol, same session
    res = _trading(trading_home, "ingest", str(orcl), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["loaded"] == 2 and out["runs"][0]["failed_checks"] == []
    inst = runs.instance(get_settings())
    evals = [rec.evaluation for key in runs.definitions().resolve_asset_graph().asset_check_keys
             for rec in inst.event_log_storage.get_asset_check_execution_history(key, limit=100)
             if rec.run_id == out["runs"][0]["run_id"]]
    assert evals and all(e.passed for e in evals)
    assert {e.metadata["scope"].value for e in evals} == {"symbols loaded by this run"}
    assert sum(e.metadata["rows_checked"].value for e in evals if e.check_name == "in_session") == 2
    # a run of the checks alone (no load) judges every stored bar
    job = runs.definitions().resolve_implicit_global_asset_job_def()
    only_checks = job.get_subset(asset_selection=set(), asset_check_selection={
        dg.AssetCheckKey(DAILY, c) for c in CHECK_GROUPS})
    alone = only_checks.execute_in_process(instance=inst, raise_on_error=False)
    assert not alone.success
    assert runs.failed_checks(alone) == ["raw/bars_daily:high_low_consistent"]
    assert table("SELECT symbol, count(*) AS n FROM raw.bars_daily GROUP BY 1 ORDER BY 1").rows() == [
        ("ORCL", 2), ("ZZZZ", 1)]


def test_failed_check_says_which_rule_symbols_and_sessions_and_what_was_stored(trading_home, tmp_path):
    """A failed check prints one line per rule (symbols, sessions, rows), no Dagster log lines
    or stack traces, and a hint that is true: the clean file's bars were stored (and checked
    before their commit); the failing bar was stored another way."""
    orcl = tmp_path / "ORCL.csv"
    orcl.write_text(ORCL)
    assert _trading(trading_home, "ingest", str(orcl)).returncode == 0
    _bad_bar("ORCL", "2013-02-28 12:00:00")  # in a loaded session, not a bar the file has
    res = _trading(trading_home, "ingest", str(orcl))
    assert res.returncode == 1
    err = res.stderr
    assert "Stack Trace" not in err and "dagster_event" not in err and "Traceback" not in err, err
    lines = [ln.strip() for ln in err.splitlines() if ln.startswith("  ") and "row(s);" in ln]
    rules = {ln.split(":", 1)[0]: ln for ln in lines}
    assert set(rules) == {"high_low_consistent"}, err
    line = rules["high_low_consistent"]
    assert "1 row(s)" in line and "symbols ORCL;" in line and "sessions 2013-02-28" in line, line
    assert "ORCL 1d 2013-02-28 12:00:00" in line
    assert "unchanged" not in err and "2 bar(s) from this load are stored and passed" in err
    out = json.loads(_trading(trading_home, "ingest", str(orcl), "--json").stdout)
    assert out["loaded"] == 2 and out["stored"] is True and out["error"] == "quality checks failed"
    assert [f["check"] for f in out["runs"][0]["check_failures"]] == ["high_low_consistent"]
    assert table("SELECT count(*) AS n FROM raw.bars_daily WHERE symbol = 'ORCL'")["n"][0] == 3


def test_a_load_commits_only_bars_the_suite_passed_and_records_them(trading_home, tmp_path):
    """Issue 21.3: a run killed after its commit left its bars stored unchecked, with no record
    of what it stored. The load runs the bar suite on what it wrote inside its transaction and
    records each symbol it stored in raw.bar_loads in that same transaction: whatever happens
    to the run afterwards (here SIGKILL as soon as its materialization is recorded), what it
    committed was checked, and the warehouse says so; the next run reports the dead run."""
    f = tmp_path / "GOOG.csv"
    f.write_text(GOOD)
    env = {**os.environ, "TRADING_HOME": str(trading_home)}
    proc = subprocess.Popen([sys.executable, "-m", "trading_pipeline.cli.main", "ingest", str(f)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    inst = runs.instance(get_settings())
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if inst.fetch_materializations(dg.AssetRecordsFilter(asset_key=DAILY), limit=1).records:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    [run] = inst.get_runs()
    assert table("SELECT count(*) AS n FROM raw.bars_daily")["n"][0] == 3
    loads = table("SELECT run_id, symbol, timeframe, bars, first_ts::DATE::VARCHAR AS first, "
                  "last_ts::DATE::VARCHAR AS last, checked_at IS NOT NULL AS checked FROM raw.bar_loads")
    assert loads.rows() == [(run.run_id, "GOOG", "1d", 3, "2013-02-27", "2013-03-01", True)]
    # the next command reaps the dead run and says what it had committed
    assert _trading(trading_home, "ingest", str(f)).returncode == 0
    dead = inst.get_run_by_id(run.run_id)
    assert dead.status == dg.DagsterRunStatus.FAILURE
    failure = [e for e in inst.all_logs(run.run_id) if e.dagster_event and e.dagster_event.is_run_failure]
    assert "committed 3 bar(s) (GOOG), checked before the commit" in failure[-1].dagster_event.message


def test_suite_failure_on_a_loads_own_bars_rolls_it_back(tmp_path):
    """The pre-commit check itself, on a real DuckDB file: a written bar that breaks the suite
    (put there directly, as a bug in the row rules would) fails the load, naming rule, symbol
    and session, and nothing of it is recorded."""
    import polars as pl

    from trading_pipeline.marketdata.ingest import LoadCheckError, _check_and_record

    with warehouse.writer(tmp_path / "w.duckdb") as con:
        con.execute("INSERT INTO raw.symbols VALUES ('GOOG','XNAS','XNAS','America/New_York','USD','equity',NULL,now())")
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT INTO raw.bars_daily VALUES ('GOOG','1d','2013-02-27','2013-02-27',1,0.5,2,1,1,'t',now())")
        written = pl.DataFrame({"symbol": ["GOOG"], "timeframe": ["1d"], "ts": [datetime(2013, 2, 27)]}
                               ).select(pl.col("symbol"), pl.col("timeframe"), pl.col("ts").cast(pl.Datetime("us")))
        with pytest.raises(LoadCheckError) as exc:
            _check_and_record(con, {"1d": written}, "r1", None)
        con.execute("ROLLBACK")
        assert [f["check"] for f in exc.value.failures] == ["high_low_consistent"]
        assert "high_low_consistent: 1 row(s); symbols GOOG; sessions 2013-02-27" in str(exc.value)
        assert con.sql("SELECT count(*) FROM raw.bars_daily").fetchall() == [(0,)]


@pytest.mark.parametrize("row", ["1949-12-30,30,31,29,30.5,100000", "2030-01-02,30,31,29,30.5,100000"])
def test_rows_outside_the_loadable_range_are_refused_before_any_run(trading_home, tmp_path, row):
    """Issues 21.3/21.4: a file reaching before the first date failed after its bars were
    committed unchecked; a stray 2030 row made the run span every session up to 2030 (minutes).
    Both are refused up front: exit 2, the row named, nothing stored, no run started. Issue
    13: the first date is TRADING_HISTORY_START (1950-01-03), and the message says so."""
    f = tmp_path / "ORCL.csv"
    f.write_text(ORCL + row + "\n")
    t0 = time.monotonic()
    res = _trading(trading_home, "ingest", str(f))
    assert res.returncode == 2, res.stderr
    assert "ORCL.csv row 4" in res.stderr and "nothing was loaded" in res.stderr
    if row.startswith("1949"):
        assert "before 1950-01-03" in res.stderr and "TRADING_HISTORY_START" in res.stderr
    assert time.monotonic() - t0 < 60  # refused before any run (was 670-749 s)
    assert not warehouse.exists(get_settings().warehouse_path) or table(
        "SELECT count(*) AS n FROM raw.bars_daily")["n"][0] == 0
    assert runs.instance(get_settings()).get_runs() == []


def test_a_run_reports_its_steps_as_they_finish(trading_home, tmp_path):
    """Issue 20.7: long runs showed a spinner without counts; run_job reports finished steps
    (what `trading demo` draws as 'steps: dbt_models 3/4')."""
    f = tmp_path / "GOOG.csv"
    f.write_text(GOOD)
    seen: list[tuple[int, int, str]] = []
    result = runs.run_job(
        "ingest_daily_bars", get_settings(),
        run_config={"ops": {"raw__bars_daily": {"config": {"source": "files", "path": str(f)}}}},
        start=date(2013, 2, 25), end=date(2013, 3, 8), on_step=lambda *a: seen.append(a),
    )
    assert result.success
    assert seen and {t for _, t, _ in seen} == {2}  # the bar asset and its checks
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)
    assert {s for _, _, s in seen if s} <= {"raw__bars_daily", "bars_daily_quality"}
    assert runs.session_key(date(2013, 3, 10)) == "2013-03-08"  # a Sunday: Friday's session


def _history_csv(path, start: date, end: date) -> int:
    """One symbol's daily bars on every XNYS session from ``start`` to ``end``."""
    from trading_pipeline.marketdata.calendars import session_dates

    days = session_dates("XNYS", start, end)
    path.write_text("Date,Open,High,Low,Close,Volume\n" + "".join(
        f"{d},{10 + i % 7},{12 + i % 7},{9 + i % 7},{11 + i % 7},{1000 + i}\n" for i, d in enumerate(days)))
    return len(days)


def test_a_history_of_any_length_is_one_materialization_and_one_result_per_check(trading_home, tmp_path):
    """Issue 13: a session-partitioned asset cost Dagster a materialization and seven check
    records per session (10 bars/s through `trading ingest`), and a file starting before
    2000-01-03 could not load at all. Now 1962..2013 (12,900 sessions) is one run with the same
    Dagster bookkeeping as a three-bar file: one materialization, seven check results."""
    short, long_ = tmp_path / "short" / "IBM.csv", tmp_path / "long" / "IBM.csv"
    short.parent.mkdir()
    long_.parent.mkdir()
    short.write_text(GOOD)
    n = _history_csv(long_, date(1962, 1, 2), date(2013, 3, 1))
    assert n > 12_000
    inst = runs.instance(get_settings())
    events = {}
    for name, f in (("short", short), ("long", long_)):
        res = runner.invoke(app, ["ingest", str(f), "--json"])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        run_id = out["runs"][0]["run_id"]
        kinds = [e.dagster_event.event_type_value for e in inst.all_logs(run_id) if e.dagster_event]
        events[name] = sorted(k for k in kinds if k.startswith(("ASSET_", "STEP_")))
        assert kinds.count("ASSET_MATERIALIZATION") == 1 and kinds.count("ASSET_CHECK_EVALUATION") == len(CHECK_GROUPS)
    assert out["loaded"] == n and out["start"] == "1962-01-02"
    assert events["long"] == events["short"]
    assert table("SELECT min(ts)::DATE::VARCHAR AS d, count(*) AS n FROM raw.bars_daily WHERE symbol = 'IBM'").row(0) == (
        "1962-01-02", n)


@pytest.mark.parametrize(("start", "end", "said"), [
    ("2013-13-01", "", "start/end must be YYYY-MM-DD"),
    ("2013-03-01", "2013-02-01", "start 2013-03-01 is after end 2013-02-01"),
    ("1949-12-30", "1950-01-05", "set TRADING_HISTORY_START"),
])
def test_a_bad_load_window_fails_the_run_with_its_reason_and_stores_nothing(trading_home, start, end, said):
    """BarsConfig.start/end (the launchpad, a schedule's request): a window that is not one
    fails the load step before anything is fetched or written, saying why."""
    cfg = {"source": "sample", "start": start, "end": end}
    result = runs.run_job("ingest_daily_bars", get_settings(), run_config={"ops": {"raw__bars_daily": {"config": cfg}}})
    assert not result.success
    assert said in runs.failure_message(result)
    assert not result.get_asset_materialization_events()
    assert not warehouse.exists(get_settings().warehouse_path) or table(
        "SELECT count(*) AS n FROM raw.bars_daily")["n"][0] == 0


def test_a_loads_checks_reuse_its_pre_commit_verdict_only_on_the_same_rows(trading_home, tmp_path):
    """The load step runs the suite on the rows it stores, inside its transaction; the run's
    checks report that verdict when they would judge exactly those rows (same count in the same
    scope), and run the suite themselves when the scope holds anything else."""
    f = tmp_path / "GOOG.csv"
    f.write_text(GOOD)
    first = ingest_file(f)
    assert first.success
    evals = first.get_asset_check_evaluations()
    assert {e.check_name for e in evals} == set(CHECK_GROUPS) and all(e.passed for e in evals)
    assert all("same 3 stored rows" in e.metadata["verified"].value for e in evals)
    assert {e.metadata["rows_checked"].value for e in evals} == {3}
    assert all(e.metadata["expectations"].value >= 1 for e in evals)
    # a stored bar the load did not write, inside its window: the checks run the suite on all 4
    con = warehouse.connect(get_settings().warehouse_path)
    con.execute("""INSERT INTO raw.bars_daily VALUES ('GOOG','1d','2013-02-28 12:00','2013-02-28',1,0.5,2,1,1,'manual',now())""")
    con.close()
    again = ingest_file(f)
    assert not again.success and runs.failed_checks(again)
    evals = again.get_asset_check_evaluations()
    assert not any("verified" in e.metadata for e in evals)
    assert {e.metadata["rows_checked"].value for e in evals} == {4}
