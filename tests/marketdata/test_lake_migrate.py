"""Upgrading a home from before DuckLake (issue 12): `trading warehouse migrate` copies the
old warehouse.duckdb's raw, ops and backtest tables into the lake, row for row, never touches
the old file, copies nothing twice, and refuses what it cannot read (exit 2, nothing written).
Real DuckDB files, the CLI as a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from trading_pipeline.marketdata import migrate
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.settings import Settings

TRADING = [str(Path(sys.executable).parent / "trading")]
SYMBOLS = [f"S{i:02d}" for i in range(10)]
COPIED = ["marts.backtest_runs", "ops.orders", "ops.portfolio_daily", "raw.bar_loads", "raw.bars_daily",
          "raw.bars_intraday", "raw.bars_rejected", "raw.corporate_actions", "raw.symbols"]
# DuckDB 1.5.5's refusal of a file DuckDB 2.0.1 wrote, word for word
NEWER_ERROR = ("IO Error: Trying to read a database file with version number 999, but we can only read versions "
               "between 64 and 68.\nThe database file was created with an newer version of DuckDB.\n\nNewer DuckDB "
               "version might introduce backward incompatible changes (possibly guarded by compatibility settings)."
               "\nSee the storage page for migration strategy and more information: https://duckdb.org/internals/storage")
# the non-zero bytes of the first block (main header) of a database file DuckDB 2.0.1 created: all
# DuckDB reads before it refuses the file (duckdb 2.0.1 has no wheel for the pinned extensions,
# so the tests cannot run it)
DUCKDB_201_HEADER = {0: "5ea24ba5318bcbd54455434be703", 52: "76322e302e31", 84: "38643738313134653930",
                     124: "d1f2b98862cb87a9e309ce19ca14e1bc"}


def write_legacy(path: Path, sessions: int = 30) -> None:
    """A warehouse.duckdb as the platform wrote it before the lake (here by this DuckDB)."""
    con = duckdb.connect(str(path))
    try:
        wh.ensure_schema(con)
        rows = []
        for d in range(sessions):
            day = date(2013, 1, 1) + timedelta(days=d)
            rows += [dict(symbol=s, timeframe="1d", ts=datetime(day.year, day.month, day.day), session_date=day,
                          open=1.0 + d, high=2.0 + d, low=0.5, close=1.5 + d + i / 10, volume=100.0 * d)
                     for i, s in enumerate(SYMBOLS)]
        wh.upsert_bars(con, "raw.bars_daily", pl.DataFrame(rows), source="sample")
        intraday = pl.DataFrame(rows[:40]).with_columns(pl.lit("1h").alias("timeframe"))
        wh.upsert_bars(con, "raw.bars_intraday", intraday, source="files")
        con.execute("INSERT INTO raw.symbols SELECT DISTINCT symbol, 'XNYS', 'XNYS', 'America/New_York', 'USD', "
                    "'equity', NULL, now()::TIMESTAMP FROM raw.bars_daily")
        con.execute("INSERT INTO raw.bars_rejected VALUES ('files', 3, 'BAD', '1d', '2013-01-02', 1, 0.5, 2, 1, 1, "
                    "'high_low', 'high < low', 'r1', now()::TIMESTAMP)")
        con.execute("""CREATE TABLE raw.bar_loads (run_id VARCHAR, symbol VARCHAR NOT NULL, timeframe VARCHAR NOT NULL,
                       first_ts TIMESTAMP NOT NULL, last_ts TIMESTAMP NOT NULL, bars BIGINT NOT NULL,
                       checked_at TIMESTAMP NOT NULL)""")
        con.execute("INSERT INTO raw.bar_loads SELECT 'run-1', symbol, '1d', min(ts), max(ts), count(*), "
                    "now()::TIMESTAMP FROM raw.bars_daily GROUP BY symbol")
        con.execute("CREATE TABLE ops.orders AS SELECT 'coid-1' AS client_order_id, 'paper' AS account, "
                    "'S01' AS symbol, 'buy' AS side, 10.0 AS quantity, NULL AS limit_price")
        con.execute("CREATE TABLE ops.portfolio_daily (session_date DATE, account VARCHAR, equity DOUBLE)")
        con.execute("INSERT INTO ops.portfolio_daily VALUES ('2013-01-30', 'paper', 100000)")
        con.execute("CREATE TABLE marts.backtest_runs AS SELECT 'bt-1' AS run_id, 'breakout' AS strategy, 0.12 AS r")
        con.execute("CREATE TABLE marts.signals AS SELECT 'S01' AS symbol, 'breakout' AS kind")  # dbt's: rebuilt
    finally:
        con.close()


def table_checksums(con: duckdb.DuckDBPyConnection, tables: list[str]) -> dict[str, tuple]:
    out = {}
    for t in tables:
        cols = [c for (c,) in con.sql(f"SELECT column_name FROM (DESCRIBE {t})").fetchall()]
        out[t] = con.sql(f"SELECT count(*), sum(hash({', '.join(cols)})) FROM {t}").fetchall()[0]
    return out


def legacy_checksums(path: Path) -> dict[str, tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return table_checksums(con, COPIED)
    finally:
        con.close()


def lake_checksums(home: Path, tables: list[str] = COPIED) -> dict[str, tuple]:
    con = wh.connect(f"ducklake:sqlite:{home / 'warehouse' / 'catalog.sqlite'}", read_only=True)
    try:
        return table_checksums(con, tables)
    finally:
        con.close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRADING_HOME": str(home), "COLUMNS": "150"}
    env.pop("TRADING_WAREHOUSE", None)
    return subprocess.run([*TRADING, *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def legacy_home(tmp_path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    write_legacy(home / "warehouse.duckdb")
    return home


def test_migrate_copies_the_old_warehouse_once_and_leaves_it_alone(legacy_home):
    old = legacy_home / "warehouse.duckdb"
    digest, stat = sha(old), old.stat()
    expected = legacy_checksums(old)
    assert expected["raw.bars_daily"][0] == 300

    run = cli(legacy_home, "warehouse", "migrate", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert sorted(out["tables"]) == COPIED  # marts.signals is dbt's: a scan rebuilds it
    for table, counts in out["tables"].items():
        assert counts["source_rows"] == counts["copied"] == counts["lake_rows"] == expected[table][0], table
    assert out["rows_copied"] == sum(c[0] for c in expected.values())
    assert out["old_warehouse"] == str(old) and out["next"] == "trading scan" and out["written_by"] == "v1.5.5"
    assert out["published"] is True  # readers and `trading scan` see the migrated bars
    assert f"copying {len(COPIED)} tables" in run.stderr  # the progress line
    assert lake_checksums(legacy_home) == expected  # the same rows, value for value
    assert sha(old) == digest and old.stat().st_mtime_ns == stat.st_mtime_ns  # untouched, where it was

    # again: nothing copied twice, for people this time
    run = cli(legacy_home, "warehouse", "migrate")
    assert run.returncode == 0, run.stderr
    assert "copied 0 rows" in run.stdout and f"the old warehouse is left as it was: {old}" in run.stdout
    assert "next: run `trading scan`" in run.stdout
    assert lake_checksums(legacy_home) == expected
    assert sha(old) == digest


def test_migrate_again_keeps_what_the_lake_has_since(tmp_path):
    old = tmp_path / "warehouse.duckdb"
    write_legacy(old)
    loc = f"ducklake:sqlite:{tmp_path / 'lake' / 'catalog.sqlite'}"
    first = migrate.migrate(loc, source_file=old)
    assert first["rows_copied"] == sum(t["source_rows"] for t in first["tables"].values())
    con = wh.connect(loc)
    try:  # after the move: a bar corrected in the lake, a new one, a new mirror of the orders
        fixed = pl.DataFrame([dict(symbol="S01", timeframe="1d", ts=datetime(2013, 1, 1), session_date=date(2013, 1, 1),
                                   open=1.0, high=9.0, low=0.5, close=8.0, volume=1.0),
                              dict(symbol="S01", timeframe="1d", ts=datetime(2013, 3, 1), session_date=date(2013, 3, 1),
                                   open=1.0, high=9.0, low=0.5, close=8.0, volume=1.0)])
        wh.upsert_bars(con, "raw.bars_daily", fixed, source="fix")
        con.execute("INSERT INTO ops.orders VALUES ('coid-2', 'paper', 'S02', 'sell', 5.0, NULL)")
    finally:
        con.close()
    again = migrate.migrate(loc, source_file=old)
    assert again["rows_copied"] == 0
    assert again["tables"]["raw.bars_daily"]["lake_rows"] == 301
    assert "kept" in again["tables"]["ops.orders"]
    con = wh.connect(loc, read_only=True)
    try:
        assert con.sql("SELECT close, source FROM raw.bars_daily WHERE symbol = 'S01' AND ts = '2013-01-01'"
                       ).fetchall() == [(8.0, "fix")]  # the lake's own version wins
        assert con.sql("SELECT count(*) FROM ops.orders").fetchall() == [(2,)]
    finally:
        con.close()


def test_migrate_refuses_what_it_cannot_read_and_writes_nothing(tmp_path):
    home = tmp_path / "home"
    run = cli(home, "warehouse", "migrate")  # no warehouse.duckdb in the home
    assert run.returncode == 2
    assert f"no DuckDB file at {home / 'warehouse.duckdb'}" in run.stderr and "--from PATH" in run.stderr
    run = cli(home, "warehouse", "migrate", "--from", str(tmp_path / "nope.duckdb"), "--json")
    assert run.returncode == 2 and "no DuckDB file at" in json.loads(run.stdout)["error"]
    (tmp_path / "notes.duckdb").write_text("not a database " * 400)
    run = cli(home, "warehouse", "migrate", "--from", str(tmp_path / "notes.duckdb"))
    assert run.returncode == 2 and "is not a DuckDB database file" in run.stderr
    run = cli(home, "warehouse", "migrate", "--from-export", str(tmp_path))
    assert run.returncode == 2 and "is not a DuckDB export: it has no load.sql" in run.stderr
    run = cli(home, "warehouse", "migrate", "--from", "a.duckdb", "--from-export", str(tmp_path))
    assert run.returncode == 2 and "not both" in run.stderr
    assert not home.exists()  # no lake, no Dagster instance: nothing written


def write_201_header(path: Path) -> None:
    block = bytearray(4096)
    for offset, hexed in DUCKDB_201_HEADER.items():
        data = bytes.fromhex(hexed)
        block[offset:offset + len(data)] = data
    path.write_bytes(bytes(block))


def test_a_newer_duckdb_file_is_refused_with_the_commands_that_move_it(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    old = home / "warehouse.duckdb"
    write_201_header(old)
    with pytest.raises(duckdb.IOException) as refused:  # what this DuckDB says about it
        duckdb.connect(str(old), read_only=True)
    assert str(refused.value) == NEWER_ERROR
    assert migrate.written_by(old) == "v2.0.1" and migrate.storage_version(old) == 999
    digest = sha(old)

    run = cli(home, "warehouse", "migrate")
    assert run.returncode == 2
    err = " ".join(run.stderr.split())
    assert f"{old} was written by DuckDB v2.0.1, which this DuckDB ({duckdb.__version__}" in err
    assert "version number 999, but we can only read versions between 64 and 68" in err
    export = home / "warehouse-export"
    lines = run.stderr.splitlines()
    uv = next(ln.strip() for ln in lines if ln.strip().startswith("uv run"))
    assert uv.startswith("uv run --no-project --with duckdb==2.0.1 python -c ") and "EXPORT DATABASE" in uv
    assert any(ln.strip() == f"trading warehouse migrate --from-export {export}" for ln in lines)
    assert not (home / "warehouse").exists() and not (home / "dagster").exists()  # nothing written
    assert sha(old) == digest

    run = cli(home, "warehouse", "migrate", "--json")
    assert run.returncode == 2
    refusal = json.loads(run.stdout)
    assert refusal["commands"][0] == uv and "written by DuckDB v2.0.1" in refusal["error"]


def test_the_export_command_and_migrate_from_export(tmp_path):
    """The printed export command, run with this DuckDB on a file it can read (2.0.1 writes the
    same EXPORT DATABASE layout), then `migrate --from-export`."""
    home = tmp_path / "home"
    home.mkdir()
    old = home / "warehouse.duckdb"
    write_legacy(old)
    expected = legacy_checksums(old)
    export = tmp_path / "export dir"  # a space: the command quotes it
    uv, then = migrate.export_commands(old, export, "v2.0.1")
    argv = shlex.split(uv)
    assert argv[:5] == ["uv", "run", "--no-project", "--with", "duckdb==2.0.1"] and argv[5:7] == ["python", "-c"]
    assert argv[8:] == [str(old), str(export)]
    subprocess.run([sys.executable, *argv[6:]], check=True, timeout=120)
    assert (export / "load.sql").exists() and list(export.glob("*.parquet"))
    assert shlex.split(then) == ["trading", "warehouse", "migrate", "--from-export", str(export)]

    run = cli(home, *shlex.split(then)[1:], "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["kind"] == "export" and sorted(out["tables"]) == COPIED
    assert all(t["source_rows"] == t["copied"] == t["lake_rows"] for t in out["tables"].values())
    assert lake_checksums(home) == expected
    run = cli(home, *shlex.split(then)[1:], "--json")
    assert run.returncode == 0 and json.loads(run.stdout)["rows_copied"] == 0


def test_open_error_maps_duckdbs_refusals():
    path = Path("/data/home/warehouse.duckdb")
    err = migrate.open_error(path, duckdb.IOException(NEWER_ERROR))
    assert str(err).startswith(f"{path} was written by a newer DuckDB, which this DuckDB")  # no header to read
    assert err.commands == [
        "uv run --no-project --with duckdb python -c \"import duckdb, sys; duckdb.connect(sys.argv[1], "
        "read_only=True).execute('EXPORT DATABASE ' + repr(sys.argv[2]) + ' (FORMAT parquet)')\" "
        "/data/home/warehouse.duckdb /data/home/warehouse-export",
        "trading warehouse migrate --from-export /data/home/warehouse-export",
    ]
    held = migrate.open_error(path, duckdb.IOException(
        'IO Error: Could not set lock on file "/data/home/warehouse.duckdb": Conflicting lock is held'))
    assert "held by another process" in str(held) and not held.commands
    assert "cannot open" in str(migrate.open_error(path, duckdb.IOException("IO Error: something else")))


def test_legacy_warehouse_hint(tmp_path, monkeypatch):
    monkeypatch.delenv("TRADING_WAREHOUSE", raising=False)
    settings = Settings(home=tmp_path, _env_file=None)
    assert migrate.legacy_warehouse_hint(settings) is None  # nothing there at all
    write_legacy(tmp_path / "warehouse.duckdb", sessions=2)
    hint = migrate.legacy_warehouse_hint(settings)
    assert hint and "trading warehouse migrate" in hint and str(tmp_path / "warehouse.duckdb") in hint
    assert migrate.legacy_warehouse_hint(Settings(home=tmp_path, warehouse=str(tmp_path / "warehouse.duckdb"),
                                                  _env_file=None)) is None  # still used as it is
    run = cli(tmp_path, "status")
    assert run.returncode == 1 and "trading warehouse migrate" in run.stderr
    migrate.migrate(settings.warehouse_path, source_file=tmp_path / "warehouse.duckdb")
    assert migrate.legacy_warehouse_hint(settings) is None  # the lake exists now
