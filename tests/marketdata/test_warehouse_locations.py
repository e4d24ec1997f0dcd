"""Warehouse locations that are not local files: ``md:`` (MotherDuck), ``ducklake:``, ``:memory:``.

MotherDuck cannot run here (no network, so DuckDB cannot download its extension, and no
account). What is tested: such a location reaches ``duckdb.connect`` (and dbt, and the serving
publish) unchanged, never as a path, and DuckDB's own refusal comes back naming the location and
what it needs; ``:memory:``, file paths and a DuckLake with a DuckDB catalog work (the DuckLake
default, SQLite and Postgres catalogs: test_lake_*.py).
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

from trading_pipeline.marketdata import warehouse as wh

MD = "md:trading"


@pytest.fixture
def no_motherduck_token(monkeypatch):
    for name in ("MOTHERDUCK_TOKEN", "motherduck_token"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def spy_connect(monkeypatch):
    """Record what reaches ``duckdb.connect`` (then call the real one)."""
    calls: list[tuple[str, bool]] = []
    real = duckdb.connect

    def connect(database=":memory:", read_only=False, **kw):
        calls.append((database, read_only))
        return real(database, read_only=read_only, **kw)

    monkeypatch.setattr(wh.duckdb, "connect", connect)
    return calls


def bars(n: int = 2) -> pl.DataFrame:
    return pl.DataFrame({
        "symbol": ["AAA"] * n, "timeframe": ["1d"] * n,
        "ts": [datetime(2013, 3, d + 1) for d in range(n)],
        "session_date": [date(2013, 3, d + 1) for d in range(n)],
        "open": [1.0] * n, "high": [2.0] * n, "low": [0.5] * n, "close": [1.5] * n, "volume": [10.0] * n,
    })


def test_locations_are_classified_like_duckdb_does():
    assert wh.location("md:trading") == "md:trading"
    # Path() would make this "s3:/bucket/w.duckdb"
    assert wh.location("s3://bucket/w.duckdb") == "s3://bucket/w.duckdb"
    lake = "ducklake:postgres:dbname=ducklake host=db.internal"
    assert wh.location(lake) == lake and wh.kind(lake) == "ducklake"
    assert wh.location(":memory:") == ":memory:" and wh.kind(":memory:") == "memory"
    assert wh.location("data/warehouse.duckdb") == Path("data/warehouse.duckdb")
    assert isinstance(wh.location("C:/data/w.duckdb"), Path)  # a drive letter, not a prefix
    assert wh.exists(MD) and not wh.exists("/nonexistent/w.duckdb")
    with pytest.raises(wh.WarehouseLocationError, match=r"needs the warehouse as a local DuckDB file; 'md:trading'"):
        wh.local_file(MD, "copying the warehouse")


def test_file_paths_keep_working(tmp_path):
    path = tmp_path / "nested" / "dir" / "warehouse.duckdb"  # folders created
    with wh.writer(str(path)) as con:
        wh.upsert_bars(con, "raw.bars_daily", bars(), source="test")
    con = wh.connect(path, read_only=True)
    try:
        assert wh.fetch_one(con, "SELECT count(*) FROM raw.bars_daily")[0] == 2
    finally:
        con.close()
    with pytest.raises(FileNotFoundError, match="no warehouse at"):
        wh.connect(tmp_path / "missing.duckdb", read_only=True)


def test_memory_location_works_and_creates_nothing(tmp_path, monkeypatch, spy_connect):
    monkeypatch.chdir(tmp_path)
    with wh.writer(":memory:") as con:
        wh.upsert_bars(con, "raw.bars_daily", bars(3), source="test")
        assert wh.fetch_one(con, "SELECT count(*) FROM raw.bars_daily")[0] == 3
    assert spy_connect == [(":memory:", False)]
    assert list(tmp_path.iterdir()) == []  # no ":memory:" file or folder


@pytest.mark.parametrize("read_only", [False, True])
def test_motherduck_location_reaches_duckdb_unchanged(tmp_path, monkeypatch, spy_connect, no_motherduck_token,
                                                      read_only):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(wh.WarehouseLocationError) as err:
        wh.connect(MD, read_only=read_only)
    assert spy_connect == [(MD, read_only)]
    assert list(tmp_path.iterdir()) == []  # no folder "md:" / file made for it
    msg = str(err.value)
    assert msg.startswith("cannot open the warehouse 'md:trading' (MotherDuck location): ")
    assert "'motherduck' extension" in msg and "MOTHERDUCK_TOKEN" in msg and "INSTALL motherduck" in msg
    # DuckDB's own error, quoted and kept
    assert isinstance(err.value.duckdb_error, duckdb.Error)
    assert 'extension "motherduck"' in str(err.value.duckdb_error) and 'extension "motherduck"' in msg


def test_ducklake_location_with_a_duckdb_catalog_works(tmp_path):
    """``ducklake:<file>`` (a DuckDB catalog file, one process) opens with the wheel extensions:
    created with its data folder beside it, read back through a second connection."""
    lake = f"ducklake:{tmp_path / 'catalog.ducklake'}"
    assert not wh.exists(lake)
    with wh.writer(lake) as con:
        wh.upsert_bars(con, "raw.bars_daily", bars(3), source="test")
    assert wh.exists(lake) and (tmp_path / "data").is_dir()
    con = wh.connect(lake, read_only=True)
    try:
        assert wh.fetch_one(con, "SELECT count(*) FROM raw.bars_daily")[0] == 3
        assert wh.snapshot_id(con) is not None
    finally:
        con.close()
    assert wh.describe(lake) == "DuckLake with a duckdb catalog"


def test_settings_keep_locations_as_strings(trading_home, monkeypatch, tmp_path):
    from trading_pipeline.settings import Settings

    assert Settings().warehouse_path == f"ducklake:sqlite:{trading_home.resolve() / 'warehouse' / 'catalog.sqlite'}"
    for loc in (MD, "ducklake:postgres:dbname=ducklake", ":memory:", "s3://bucket/w.duckdb"):
        monkeypatch.setenv("TRADING_WAREHOUSE", loc)
        assert Settings().warehouse_path == loc and isinstance(Settings().warehouse_path, str)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADING_WAREHOUSE", "wh/w.duckdb")
    assert Settings().warehouse_path == tmp_path.resolve() / "wh" / "w.duckdb"


def test_dbt_gets_the_location_unchanged(tmp_path):
    from trading_pipeline.scans.dbt_runner import dbt_env

    assert dbt_env(MD)["TRADING_WAREHOUSE"] == MD
    assert dbt_env("ducklake:meta.ducklake")["TRADING_WAREHOUSE"] == "ducklake:meta.ducklake"
    assert dbt_env(tmp_path / "w.duckdb")["TRADING_WAREHOUSE"] == str((tmp_path / "w.duckdb").resolve())
    with pytest.raises(wh.WarehouseLocationError, match="dbt runs in its own process"):
        dbt_env(":memory:")


def test_dbt_duckdb_opens_the_motherduck_location(tmp_path, no_motherduck_token):
    """The profile hands ``md:trading`` to dbt-duckdb, which takes it for MotherDuck (its
    motherduck plugin, database ``trading``) and fails: its extension is not installed here."""
    from trading_pipeline.scans.dbt_runner import run_dbt

    proc = run_dbt(["debug"], MD, check=False, target_path=tmp_path / "target")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "path: md:trading" in out and "database: trading" in out and "'module': 'motherduck'" in out
    # auto-install is off (extensions come from the locked wheels; there is none for MotherDuck)
    assert 'motherduck.duckdb_extension" not found' in out


def test_serving_publish_from_other_locations(tmp_path, no_motherduck_token):
    from trading_pipeline.serving.publish import publish_snapshot

    # the Dagster asset's way: through the warehouse's own connection, whatever it is
    with wh.writer(":memory:") as con:
        wh.upsert_bars(con, "raw.bars_daily", bars(2), source="test")
        snap = publish_snapshot(":memory:", tmp_path / "serving", con=con)
    snap_con = duckdb.connect(str(snap), read_only=True)
    try:
        assert snap_con.sql("SELECT count(*) FROM raw.bars_daily").fetchall() == [(2,)]
        assert snap_con.sql("SELECT warehouse FROM snapshot_meta").fetchall() == [(":memory:",)]
    finally:
        snap_con.close()
    # without a connection: an in-memory warehouse cannot be reached, md: is attached as given
    with pytest.raises(wh.WarehouseLocationError, match="without its connection"):
        publish_snapshot(":memory:", tmp_path / "serving2")
    with pytest.raises(wh.WarehouseLocationError) as err:
        publish_snapshot(MD, tmp_path / "serving3")
    assert "cannot open the warehouse 'md:trading'" in str(err.value) and "motherduck" in str(err.value)


def test_cli_status_names_the_location(trading_home, monkeypatch, no_motherduck_token):
    from typer.testing import CliRunner

    from trading_pipeline.cli.main import app
    from trading_pipeline.settings import get_settings

    monkeypatch.setenv("TRADING_WAREHOUSE", MD)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())  # rich wraps long lines
    assert "cannot open the warehouse 'md:trading' (MotherDuck location)" in out and "INSTALL motherduck" in out


def test_dagster_load_reaches_the_motherduck_location(trading_home, monkeypatch, no_motherduck_token):
    """TRADING_WAREHOUSE=md:trading reaches the raw load inside a Dagster run unchanged."""
    from trading_pipeline import runs
    from trading_pipeline.settings import get_settings

    monkeypatch.setenv("TRADING_WAREHOUSE", MD)
    get_settings.cache_clear()
    runs.definitions.cache_clear()
    try:
        result = runs.run_job("ingest_daily_bars", get_settings(), start=date(2013, 3, 1))
        assert not result.success
        message = runs.failure_message(result)
        assert "WarehouseLocationError" in message and "cannot open the warehouse 'md:trading'" in message
    finally:
        runs.definitions.cache_clear()
        get_settings.cache_clear()
    assert not (trading_home / "md:trading").exists() and not Path("md:trading").exists()
