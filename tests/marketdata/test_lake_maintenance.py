"""Lake maintenance (issue 12): many small commits compact into few files and snapshots, the
data stays the same, and what the serving layer published stays readable (real DuckLake:
SQLite catalog, Parquet files; the Dagster job in-process; the CLI as a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from trading_pipeline.defs.maintenance import (
    COMPACT_JOB,
    compact_lake,
    lake_maintenance_daily,
    lake_maintenance_job,
)
from trading_pipeline.defs.resources import WAREHOUSE_WRITERS, WarehouseResource
from trading_pipeline.marketdata import maintenance
from trading_pipeline.marketdata import warehouse as wh

SYMBOLS = [f"S{i:02d}" for i in range(20)]  # 20 rows a commit: more than DuckLake inlines (10)
FIRST = date(2024, 1, 1)
NOW = timedelta(0)  # file_grace: delete what nothing reads at once (default: after 10 minutes)


def session(day: date, symbols: list[str] = SYMBOLS, close: float = 1.5) -> pl.DataFrame:
    n = len(symbols)
    return pl.DataFrame({
        "symbol": symbols, "timeframe": ["1d"] * n, "ts": [datetime(day.year, day.month, day.day)] * n,
        "session_date": [day] * n, "open": [1.0] * n, "high": [2.0] * n, "low": [0.5] * n,
        "close": [close + i for i in range(n)], "volume": [100.0] * n,
    })


def intraday(day: date) -> pl.DataFrame:  # 3 rows a commit: inlined in the catalog
    return session(day, SYMBOLS[:3]).with_columns(pl.lit("1h").alias("timeframe"))


def lake(tmp_path: Path) -> str:
    return f"ducklake:sqlite:{tmp_path / 'warehouse' / 'catalog.sqlite'}"


def small_commits(loc: str, days: range, *, reload_every: int = 6) -> None:
    """One upsert a session (a snapshot and a file each), an inlined intraday one, and every
    ``reload_every``-th session loaded again for some symbols (delete files)."""
    con = wh.connect(loc)
    try:
        wh.ensure_schema(con)
        for i in days:
            day = FIRST + timedelta(days=i)
            wh.upsert_bars(con, "raw.bars_daily", session(day), source="test")
            wh.upsert_bars(con, "raw.bars_intraday", intraday(day), source="test")
            if i % reload_every == 0:
                wh.upsert_bars(con, "raw.bars_daily", session(day, SYMBOLS[:12], close=9.5), source="reload")
    finally:
        con.close()


CHECKSUM = """SELECT count(*), sum(hash(symbol, timeframe, ts, session_date, open, high, low, close, volume,
                                      source, ingested_at)) FROM {table}"""


def checksums(con: duckdb.DuckDBPyConnection) -> dict[str, tuple]:
    # fetchall, never fetchone: an unfinished result keeps the SQLite catalog's read lock,
    # and a writer's commit then fails with "database is locked"
    return {t: con.sql(CHECKSUM.format(table=t)).fetchall()[0] for t in ("raw.bars_daily", "raw.bars_intraday")}


def read_checksums(loc: str, **kw) -> dict[str, tuple]:
    con = wh.connect_lake(loc, read_only=True, **kw)
    try:
        return checksums(con)
    finally:
        con.close()


def test_compaction_bounds_files_and_snapshots_and_keeps_the_data(tmp_path):
    loc = lake(tmp_path)
    small_commits(loc, range(60))
    data = read_checksums(loc)
    assert data["raw.bars_daily"][0] == 60 * 20 and data["raw.bars_intraday"][0] == 60 * 3

    first = maintenance.compact(loc, keep_snapshots_days=0, file_grace=NOW)
    before, after = first["before"], first["after"]
    assert before["snapshots"] > 130 and before["files"] >= 60 and before["inlined_rows"] >= 180
    assert before["delete_files"] > 0  # the reloads
    assert after["snapshots"] == 1  # only the current one: nothing published, nothing younger than 0 days
    assert after["files"] <= 4 and after["data_files"] <= 4 and after["delete_files"] == 0
    assert after["inlined_rows"] == 0 and first["inlined_rows_flushed"] >= 180
    assert after["disk_files"] == after["files"] < before["disk_files"]  # the old files are gone from disk
    assert after["bytes"] < before["bytes"]
    assert read_checksums(loc) == data

    # more small commits, compacted again: bounded the same way, the data is the new data
    small_commits(loc, range(60, 90))
    data = read_checksums(loc)
    second = maintenance.compact(loc, keep_snapshots_days=0, file_grace=NOW)
    assert second["before"]["snapshots"] > 60 and second["before"]["files"] > 30
    assert second["after"]["snapshots"] == 1 and second["after"]["files"] <= 4
    assert read_checksums(loc) == data
    # nothing new: a compaction changes nothing (same figures)
    third = maintenance.compact(loc, keep_snapshots_days=0, file_grace=NOW)
    assert third["after"] == third["before"] == {**second["after"], "snapshots": 1}
    assert read_checksums(loc) == data


def test_replaced_files_wait_for_queries_that_may_still_read_them(tmp_path):
    loc = lake(tmp_path)
    small_commits(loc, range(12))
    data = read_checksums(loc)
    first = maintenance.compact(loc, keep_snapshots_days=0)
    after = first["after"]
    assert after["snapshots"] == 1 and after["data_files"] <= 4 and after["delete_files"] == 0
    waiting = after["awaiting_deletion"]
    assert waiting >= 12 and after["files"] == after["data_files"] and after["files"] + waiting == after["disk_files"]
    assert read_checksums(loc) == data
    # the next compaction, 10 minutes on, deletes them
    later = maintenance.compact(loc, keep_snapshots_days=0, now=datetime.now(UTC) + timedelta(minutes=11))
    assert later["files_deleted"] == waiting
    assert later["after"]["awaiting_deletion"] == 0 and later["after"]["files"] == later["after"]["disk_files"] <= 4
    assert read_checksums(loc) == data


def test_retention_and_published_snapshots_are_kept(tmp_path):
    loc = lake(tmp_path)
    small_commits(loc, range(20))
    con = wh.connect(loc)
    try:
        published = wh.snapshot_id(con)  # what the serving layer published (its table is optional)
        con.execute("CREATE SCHEMA IF NOT EXISTS serving")
        con.execute("CREATE TABLE serving.publishes (sequence BIGINT, snapshot_id BIGINT, published_at TIMESTAMP)")
        con.execute("INSERT INTO serving.publishes VALUES (1, 3, now()::TIMESTAMP), (2, ?, now()::TIMESTAMP)",
                    [published])
    finally:
        con.close()
    at_publish = read_checksums(loc, snapshot_version=published)
    small_commits(loc, range(20, 40))
    newer = published + 30
    at_newer = read_checksums(loc, snapshot_version=newer)
    latest = read_checksums(loc)
    early = read_checksums(loc, snapshot_version=40)
    # a reader pinned to the published snapshot, open across the compaction
    pinned = wh.connect_lake(loc, snapshot_version=published)
    try:
        # within the retention (7 days): nothing is expired, files are merged all the same
        kept = maintenance.compact(loc, keep_snapshots_days=7)
        assert kept["snapshots_expired"] == 0 and kept["files_merged"] > 0
        assert kept["after"]["snapshots"] > kept["before"]["snapshots"]  # flush, rewrite and merge commit
        assert read_checksums(loc, snapshot_version=40) == early  # time travel reads the same rows

        # a week later: everything older goes, except the newest publish and what came after it
        result = maintenance.compact(loc, keep_snapshots_days=7, now=datetime.now(UTC) + timedelta(days=8))
        assert result["published_snapshot"] == published
        assert result["snapshots_expired"] == published  # snapshots 0 .. published-1
        assert checksums(pinned) == at_publish
    finally:
        pinned.close()
    assert read_checksums(loc, snapshot_version=published) == at_publish
    assert read_checksums(loc, snapshot_version=newer) == at_newer
    assert read_checksums(loc) == latest
    with pytest.raises(wh.WarehouseLocationError, match=f"No snapshot found at version {published - 1}"):
        read_checksums(loc, snapshot_version=published - 1)


def test_published_snapshot_reads_the_newest_publish(tmp_path):
    loc = lake(tmp_path)
    con = wh.connect(loc)
    try:
        wh.ensure_schema(con)
        assert maintenance.published_snapshot(con) is None  # no serving.publishes: nothing protected
        con.execute("CREATE SCHEMA serving")
        con.execute("CREATE TABLE serving.publishes (sequence BIGINT, snapshot_id BIGINT, data_snapshot BIGINT)")
        assert maintenance.published_snapshot(con) is None
        con.execute("INSERT INTO serving.publishes VALUES (1, 4, 3), (2, 9, 8)")
        assert maintenance.published_snapshot(con) == 8  # the data it serves is older than its own commit
        # the lake publish as serving/publish.py writes it today: main.snapshot_meta.data_snapshot
        con.execute("CREATE TABLE main.snapshot_meta (sequence BIGINT, data_snapshot BIGINT)")
        con.execute("INSERT INTO main.snapshot_meta VALUES (1, 5), (2, 7)")
        assert maintenance.published_snapshot(con) == 7
    finally:
        con.close()


def test_compaction_refuses_what_is_not_a_lake(tmp_path):
    with pytest.raises(maintenance.MaintenanceError, match="compaction is for a DuckLake"):
        maintenance.compact(tmp_path / "warehouse.duckdb", keep_snapshots_days=7)
    with pytest.raises(maintenance.MaintenanceError, match="no warehouse at"):
        maintenance.compact(lake(tmp_path), keep_snapshots_days=7)
    assert not (tmp_path / "warehouse").exists()
    with pytest.raises(ValueError, match="keep_snapshots_days"):
        maintenance.compact(lake(tmp_path), keep_snapshots_days=-1)


def test_the_dagster_job_records_the_figures(tmp_path):
    loc = lake(tmp_path)
    small_commits(loc, range(12))
    data = read_checksums(loc)
    assert lake_maintenance_job.name == COMPACT_JOB and compact_lake.pool == WAREHOUSE_WRITERS
    assert lake_maintenance_daily.job_name == COMPACT_JOB and lake_maintenance_daily.cron_schedule == "30 3 * * *"
    result = lake_maintenance_job.execute_in_process(
        run_config={"ops": {"compact_lake": {"config": {"keep_snapshots_days": 0}}}},
        resources={"warehouse": WarehouseResource(path=loc)},
    )
    assert result.success
    out = result.output_for_node("compact_lake")
    assert out["after"]["snapshots"] == 1 and out["after"]["data_files"] < out["before"]["data_files"]
    metadata = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT
                    ).event_specific_data.metadata
    assert metadata["files_before"].value == out["before"]["files"]
    assert metadata["files_after"].value == out["after"]["files"]
    assert metadata["snapshots_after"].value == 1 and metadata["snapshots_expired"].value > 0
    assert read_checksums(loc) == data

    # a warehouse that is not a lake: the scheduled job leaves it alone, and succeeds
    skipped = lake_maintenance_job.execute_in_process(
        resources={"warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb"))})
    assert skipped.success and "not a DuckLake" in skipped.output_for_node("compact_lake")["skipped"]


def test_cli_compact(tmp_path):
    home = tmp_path / "home"
    loc = f"ducklake:sqlite:{home / 'warehouse' / 'catalog.sqlite'}"
    small_commits(loc, range(30))
    data = read_checksums(loc)
    env = {**os.environ, "TRADING_HOME": str(home), "COLUMNS": "150"}
    env.pop("TRADING_WAREHOUSE", None)
    trading = [sys.executable, "-m", "trading_pipeline.cli.main"]
    run = subprocess.run([*trading, "warehouse", "compact", "--keep-days", "0", "--json"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["run_id"] and out["before"]["files"] >= 30 and out["after"]["data_files"] <= 4
    assert out["before"]["snapshots"] > 60 and out["after"]["snapshots"] == 1
    assert "compacting the lake" in run.stderr  # the progress line
    assert read_checksums(loc) == data

    run = subprocess.run([*trading, "warehouse", "compact"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "lake compaction" in run.stdout and "snapshots" in run.stdout and "expired" in run.stdout

    # a DuckDB file warehouse: refused, exit 2, with what to do
    run = subprocess.run([*trading, "warehouse", "compact"], env={**env, "TRADING_WAREHOUSE": str(tmp_path / "w.duckdb")},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 2 and "compaction is for a DuckLake" in run.stderr
    assert "trading warehouse migrate" in run.stderr
