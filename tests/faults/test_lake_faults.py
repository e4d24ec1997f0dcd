"""Faults of the DuckLake warehouse, through the `trading` CLI in subprocesses.

A lake that cannot be opened (a folder where the catalog file should be, a file where its
folder should be, a corrupt catalog, a missing extension, an unreachable Postgres catalog) is
a setting or a file to fix, not a failed computation: `trading ingest` says which location,
what DuckDB said and what to do, exits 2 before any run, and writes nothing. A writer killed
with SIGKILL in the middle of a big load, or at its commit, leaves the previous snapshot (or,
past the commit, the whole new one): never part of a load; the same load run again completes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.pg import free_port
from trading_pipeline import runs
from trading_pipeline.marketdata import warehouse as wh

GOOG = (
    "Date,Open,High,Low,Close,Volume\n2013-02-27,794.8,804.8,791.1,799.8,2522000\n"
    "2013-02-28,801.1,806.2,799.0,801.2,2265800\n2013-03-01,797.8,807.1,796.2,806.2,2175400\n"
)
TRADING = str(Path(sys.executable).parent / "trading")
FIX = "restore it from a backup, or point TRADING_WAREHOUSE elsewhere"


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: (kind, size, content hash) — what "nothing written" compares."""
    out: dict[str, tuple] = {}
    if root.is_file():
        return {".": ("file", root.stat().st_size, hashlib.sha256(root.read_bytes()).hexdigest())}
    for p in sorted(root.rglob("*")) if root.exists() else []:
        if p.is_file():
            out[str(p.relative_to(root))] = ("file", p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[str(p.relative_to(root))] = ("dir",)
    return out


OWN = ("TRADING_WAREHOUSE", "TRADING_WAREHOUSE_DATA_PATH", "TRADING_DUCKDB_EXTENSIONS")


def trading(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    """`trading *args` in ``home``, with the warehouse settings given in ``env`` and no others."""
    full = {k: v for k, v in os.environ.items() if k not in OWN}
    full.update(TRADING_HOME=str(home), **env)
    return subprocess.run([TRADING, *args], env=full, capture_output=True, text=True, timeout=300)


def bar_file(tmp_path: Path) -> Path:
    f = tmp_path / "in" / "GOOG.csv"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(GOOG)
    return f


def seeded_lake(home: Path) -> Path:
    """A lake in ``home`` (the default location) holding 10 bars: the warehouse folder."""
    loc = f"ducklake:sqlite:{home / 'warehouse' / 'catalog.sqlite'}"
    ts = [datetime(2013, 1, 2) + timedelta(days=d) for d in range(10)]
    with wh.writer(loc) as con:
        wh.upsert_bars(con, "raw.bars_daily", pl.DataFrame({
            "symbol": ["AAA"] * 10, "timeframe": ["1d"] * 10, "ts": ts, "session_date": [t.date() for t in ts],
            "open": [1.0] * 10, "high": [2.0] * 10, "low": [0.5] * 10, "close": [1.5] * 10, "volume": [10.0] * 10,
        }), source="seed")
    return home / "warehouse"


def one_line(text: str) -> str:
    return " ".join(text.split())


def assert_refused(proc: subprocess.CompletedProcess, *expected: str) -> str:
    err = one_line(proc.stderr)
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    for part in expected:
        assert part in err, f"{part!r} not in:\n{err}"
    assert "Traceback" not in proc.stderr
    return err


# ---- a lake that cannot be opened: exit 2, the location and the fix, nothing written ----------

def test_a_folder_where_the_catalog_file_should_be(tmp_path) -> None:
    home = tmp_path / "home"
    catalog = home / "warehouse" / "catalog.sqlite"
    catalog.mkdir(parents=True)
    before = tree(home)
    p = trading("ingest", str(bar_file(tmp_path)), home=home)
    assert_refused(p, f"cannot open the warehouse 'ducklake:sqlite:{catalog}'", "not a catalog file but a folder", FIX,
                   "nothing was loaded")
    assert tree(home) == before  # no data folder, no Dagster run: the CLI refused before any run


def test_a_file_where_the_warehouse_folder_should_be(tmp_path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "warehouse").write_text("not a folder")
    before = tree(home)
    p = trading("ingest", str(bar_file(tmp_path)), home=home)
    assert_refused(p, f"cannot open the warehouse 'ducklake:sqlite:{home / 'warehouse' / 'catalog.sqlite'}'",
                   "Not a directory", FIX)
    assert tree(home) == before


def test_a_corrupt_catalog(tmp_path) -> None:
    home = tmp_path / "home"
    lake = seeded_lake(home)
    catalog = lake / "catalog.sqlite"
    catalog.write_bytes(os.urandom(64 * 1024))  # garbage where the SQLite catalog was
    before = tree(home)
    p = trading("ingest", str(bar_file(tmp_path)), home=home)
    assert_refused(p, f"cannot open the warehouse 'ducklake:sqlite:{catalog}'", "file is not a database",
                   f"Check the catalog file {catalog}", FIX)
    p = trading("backtest", "--strategy", "breakout", home=home)  # a reader of the warehouse
    assert_refused(p, f"cannot open the warehouse 'ducklake:sqlite:{catalog}'", "file is not a database", FIX)
    assert tree(home) == before


def test_a_missing_extension(tmp_path) -> None:
    """TRADING_DUCKDB_EXTENSIONS names a folder without the ducklake extension: used as it is
    (nothing is linked into it, no download), so the extension is missing for real."""
    home = tmp_path / "home"
    lake = seeded_lake(home)
    empty = tmp_path / "extensions"
    empty.mkdir()
    # DuckDB itself cannot load it from there
    con = duckdb.connect(config={"extension_directory": str(empty), "autoinstall_known_extensions": "false"})
    with pytest.raises(duckdb.Error, match="ducklake"):
        con.execute("LOAD ducklake")
    con.close()
    before = tree(home)
    p = trading("ingest", str(bar_file(tmp_path)), home=home, TRADING_DUCKDB_EXTENSIONS=str(empty))
    missing = empty / f"v{duckdb.__version__}" / "linux_amd64" / "ducklake.duckdb_extension"
    assert_refused(p, f"cannot open the warehouse 'ducklake:sqlite:{lake / 'catalog.sqlite'}'",
                   f"DuckDB's 'ducklake' extension is not in the extension folder TRADING_DUCKDB_EXTENSIONS={empty}",
                   f"(no {missing})", "unset TRADING_DUCKDB_EXTENSIONS to use the locked duckdb-extension-* wheels")
    assert tree(home) == before
    assert list(empty.iterdir()) == []  # nothing was linked or downloaded into the user's folder


def test_an_unreachable_postgres_catalog(tmp_path) -> None:
    home = tmp_path / "home"
    port = free_port()  # nothing listens there
    loc = f"ducklake:postgres:host=127.0.0.1 port={port} user=trading password=s3cret dbname=trading connect_timeout=5"
    data = tmp_path / "lake-data"
    p = trading("ingest", str(bar_file(tmp_path)), home=home, TRADING_WAREHOUSE=loc, TRADING_WAREHOUSE_DATA_PATH=str(data))
    err = assert_refused(p, f"cannot open the warehouse '{loc.replace('s3cret', '***')}'",
                         "cannot connect to Postgres", "Connection refused",
                         "Check the postgres server of the catalog is running and reachable")
    assert "s3cret" not in p.stderr + p.stdout, "the password is shown"
    assert err.count(f"port={port}") == 1  # DuckDB's own repetitions of the conninfo are dropped
    assert not data.exists() and not (home / "warehouse").exists()


def test_a_reader_of_a_corrupt_catalog_exits_2(tmp_path) -> None:
    home = tmp_path / "home"
    catalog = seeded_lake(home) / "catalog.sqlite"
    catalog.write_bytes(os.urandom(64 * 1024))
    p = trading("status", home=home)
    assert_refused(p, f"cannot open the warehouse 'ducklake:sqlite:{catalog}'", FIX)


def test_a_run_that_cannot_open_the_warehouse_is_told_apart_from_a_failed_step() -> None:
    """Inside a Dagster run (the lake became unreachable after the CLI's check): the error is
    recognised (the CLI exits 2 with it) and quoted once, without Python's class prefix."""
    import dagster as dg

    loc = "ducklake:postgres:host=db password=pw dbname=trading"

    @dg.op
    def opens_the_warehouse() -> None:
        raise wh.open_error(loc, duckdb.IOException(f'Unable to connect to Postgres at "{loc}": Connection refused'))

    @dg.job
    def job() -> None:
        opens_the_warehouse()

    result = job.execute_in_process(raise_on_error=False)
    said = runs.warehouse_error(result)
    assert said and said.startswith("cannot open the warehouse 'ducklake:postgres:host=db password=*** dbname=trading'")
    assert "cannot connect to Postgres: Connection refused" in said and "pw" not in said
    assert runs.failure_message(result).startswith(f"WarehouseLocationError: {said}")


# ---- kill -9 in the middle of a load, or at its commit ---------------------------------------

LOAD = r'''
import sys, time
from datetime import datetime
import polars as pl
from trading_pipeline.marketdata import warehouse as wh

loc, price, symbols, pause = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(","), float(sys.argv[4])
n = 100_000  # bars per symbol group: 2,000 symbols x 50 sessions
frames = []
for group in symbols:
    frames.append(pl.DataFrame({"i": range(n)}).select(
        (pl.lit(group) + (pl.col("i") // 50).cast(pl.String)).alias("symbol"), pl.lit("1d").alias("timeframe"),
        (pl.lit(datetime(2013, 1, 2)) + pl.duration(days=pl.col("i") % 50)).alias("ts")))
bars = pl.concat(frames).with_columns(
    pl.col("ts").dt.date().alias("session_date"), pl.lit(price).alias("open"), pl.lit(price + 1).alias("high"),
    pl.lit(price - 0.5).alias("low"), pl.lit(price).alias("close"), pl.lit(10.0).alias("volume"))
with wh.writer(loc) as con:
    con.execute("SET enable_progress_bar = false")
    def load():
        print("writing", flush=True)
        wh.upsert_bars(con, "raw.bars_daily", bars, source=f"load:{price}", in_transaction=True)
        time.sleep(pause)  # written, not committed: a kill until here is always before the commit
        print("committing", flush=True)
    wh.transaction(con, load)
print("committed", flush=True)
'''


def start_load(loc: str, price: float, symbols: str, env: dict, pause: float = 0.0) -> subprocess.Popen:
    """A process loading groups of 100,000 bars in one transaction; ``pause`` seconds between
    writing them and the commit."""
    return subprocess.Popen([sys.executable, "-c", LOAD, loc, str(price), symbols, str(pause)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def lake_state(loc: str) -> tuple[int | None, list[tuple]]:
    """(snapshot, per symbol group: bars, distinct keys, distinct prices, min price)."""
    con = wh.connect(loc, read_only=True)
    try:
        return wh.snapshot_id(con), con.sql(
            "SELECT left(symbol, 1) AS g, count(*), count(DISTINCT (symbol, ts)), count(DISTINCT open), min(open) "
            "FROM raw.bars_daily GROUP BY g ORDER BY g").fetchall()
    finally:
        con.close()


@pytest.fixture(params=["sqlite", "postgres"])
def kill_lake(request, trading_home, tmp_path) -> tuple[str, dict]:
    """(a lake location, the environment of a writer process): the default SQLite catalog in
    TRADING_HOME, or a Postgres one on the throwaway cluster."""
    env = {k: v for k, v in os.environ.items() if k not in OWN}
    env["TRADING_HOME"] = str(trading_home)
    if request.param == "sqlite":
        return f"ducklake:sqlite:{trading_home / 'warehouse' / 'catalog.sqlite'}", env
    cluster = request.getfixturevalue("pg_cluster")
    database = request.getfixturevalue("pg_database")
    return f"ducklake:postgres:{cluster.dsn(database)}", {**env, "TRADING_WAREHOUSE_DATA_PATH": str(tmp_path / "lake-data")}


def kill_at(proc: subprocess.Popen, line: str, after: float = 0.0) -> None:
    for got in proc.stdout:
        if got.strip() == line:
            break
    else:
        raise AssertionError(f"the load ended before {line!r}: {proc.wait()} {proc.stderr.read()[-2000:]}")
    time.sleep(after)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_mid_load_and_at_commit_then_the_load_again(kill_lake) -> None:
    loc, env = kill_lake
    seed = start_load(loc, 1.0, "A", env)  # 100,000 bars of group A at price 1
    _, err = seed.communicate(timeout=300)
    assert seed.returncode == 0, err[-3000:]
    before = lake_state(loc)
    assert before[1] == [("A", 100_000, 100_000, 1, 1.0)]

    # the load: A again at price 2 (delete + insert) and a new group B, 200,000 bars in one transaction
    kill_at(start_load(loc, 2.0, "A,B", env, pause=120), "writing", after=1.0)  # while writing (or before COMMIT)
    assert lake_state(loc) == before  # the previous snapshot: none of the killed load

    loaded = (before[0], [("A", 100_000, 100_000, 1, 2.0), ("B", 100_000, 100_000, 1, 2.0)])
    kill_at(start_load(loc, 2.0, "A,B", env), "committing")  # as it runs COMMIT
    snap, groups = lake_state(loc)
    if snap == before[0]:
        assert (snap, groups) == before, "killed before its commit landed: the previous snapshot"
    else:
        assert groups == loaded[1], "killed after its commit landed: the whole load"

    # the same load again completes: each bar once, all from it
    again = start_load(loc, 2.0, "A,B", env)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0 and out.split()[-1] == "committed", err[-3000:]
    snap, groups = lake_state(loc)
    assert snap > before[0] and groups == loaded[1]
