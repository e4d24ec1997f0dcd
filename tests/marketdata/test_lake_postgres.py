"""The warehouse as a DuckLake with its catalog in Postgres (``ducklake:postgres:<conninfo>``),
on the throwaway cluster (tests/pg.py): writers in several processes (machines) at once.

DuckLake commits optimistically. A transaction that inserts into a table another one deleted
from since it began conflicts, and DuckLake does not retry that itself: the later COMMIT fails
with "Transaction conflict" and is rolled back. Two loads of the same new bars delete nothing,
so every upsert also updates its row of ``raw.bar_writes``: concurrent upserts always conflict.
``warehouse.transaction`` (used by every bar load) runs the later one again on the new
snapshot; creating a new lake, and its raw tables, from several processes at once is retried
the same way. Checked here directly (two
connections, interleaved), with processes, and end to end: an ingest and a scan (bar load +
dbt build) from two homes sharing one Postgres lake, with a reader process querying throughout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from trading_pipeline.marketdata import warehouse as wh

SESSIONS = [date(2013, 2, 19) + timedelta(days=i) for i in range(11)]
SESSIONS = [d for d in SESSIONS if d.weekday() < 5]  # 2013-02-19 .. 2013-03-01: 9 NYSE sessions
SCAN_DAY = SESSIONS[-1]  # the last day of the bundled sample


@pytest.fixture
def pg_lake(trading_home, pg_cluster, pg_database, tmp_path, monkeypatch) -> tuple[str, Path]:
    """(TRADING_WAREHOUSE for an empty Postgres catalog, the data folder), set in this process."""
    loc = f"ducklake:postgres:{pg_cluster.dsn(pg_database)}"
    data = tmp_path / "lake-data"
    monkeypatch.setenv("TRADING_WAREHOUSE", loc)
    monkeypatch.setenv("TRADING_WAREHOUSE_DATA_PATH", str(data))
    from trading_pipeline.settings import get_settings

    get_settings.cache_clear()
    return loc, data


def bars(symbol: str, price: float, days: int = 10) -> pl.DataFrame:
    ts = [datetime(2013, 1, 2) + timedelta(days=d) for d in range(days)]
    return pl.DataFrame({
        "symbol": [symbol] * days, "timeframe": ["1d"] * days, "ts": ts, "session_date": [t.date() for t in ts],
        "open": [price] * days, "high": [price + 1] * days, "low": [price - 1] * days, "close": [price] * days,
        "volume": [100.0] * days,
    })


def test_a_new_postgres_lake_takes_its_data_path_from_the_setting(pg_lake) -> None:
    loc, data = pg_lake
    with wh.writer(loc) as con:  # the catalog database is empty: this creates the lake
        wh.upsert_bars(con, "raw.bars_daily", bars("AAA", 1.0, days=100), source="test")
    assert list(data.rglob("*.parquet")), "the bars were written under TRADING_WAREHOUSE_DATA_PATH"
    con = wh.connect(loc, read_only=True)  # and found again: the catalog remembers the data path
    try:
        assert wh.fetch_one(con, "SELECT value FROM ducklake_options('lake') WHERE option_name = 'data_path'")[0] \
            == f"{data}/"
        assert wh.fetch_one(con, "SELECT count(*) FROM raw.bars_daily")[0] == 100
    finally:
        con.close()


def test_processes_creating_a_new_lake_at_once_all_open_it(pg_lake, tmp_path) -> None:
    """The first loads of several machines on an empty catalog: one creates the lake and its
    raw tables, the others' set-up conflicts with it (DuckLake's catalog tables, then each
    CREATE) and they attach the lake it made."""
    loc, data = pg_lake
    go = tmp_path / "go"
    script = (
        "import sys, time\nfrom pathlib import Path\nfrom trading_pipeline.marketdata import warehouse as wh\n"
        "while not Path(sys.argv[2]).exists():\n    time.sleep(0.005)\n"
        "with wh.writer(sys.argv[1]) as con:\n    print(wh.snapshot_id(con))\n"
    )
    env = {**os.environ, "TRADING_WAREHOUSE_DATA_PATH": str(data)}
    procs = [subprocess.Popen([sys.executable, "-c", script, loc, str(go)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    time.sleep(2)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    con = wh.connect(loc, read_only=True)
    try:
        tables = wh.fetch_frame(con, "SELECT schema_name || '.' || table_name AS t FROM duckdb_tables() "
                                     "WHERE database_name = 'lake' ORDER BY t")["t"].to_list()
    finally:
        con.close()
    assert tables == ["raw.bar_writes", "raw.bars_daily", "raw.bars_intraday", "raw.bars_rejected",
                      "raw.corporate_actions", "raw.symbols"]


def test_concurrent_upserts_conflict_and_the_later_one_runs_again(pg_lake) -> None:
    loc, _ = pg_lake
    with wh.writer(loc) as con:
        wh.upsert_bars(con, "raw.bars_daily", bars("AAA", 1.0), source="seed")
    first, second = wh.connect(loc), wh.connect(loc)  # two processes, as far as the lake can tell
    try:
        # DuckLake itself: the later of two commits that both deleted from the table fails
        first.execute("BEGIN TRANSACTION")
        wh.upsert_bars(first, "raw.bars_daily", bars("AAA", 2.0), source="first", in_transaction=True)
        wh.upsert_bars(second, "raw.bars_daily", bars("AAA", 3.0), source="second")
        with pytest.raises(duckdb.TransactionException, match="Transaction conflict") as conflict:
            first.execute("COMMIT")
        assert wh.is_commit_conflict(conflict.value)
        wh.rollback(first)  # the failed COMMIT ended the transaction: this must not raise

        # warehouse.transaction: the same interleaving, with bars neither load finds stored (so
        # neither deletes any: only raw.bar_writes makes them conflict), and the first load runs again
        attempts = []

        def load() -> None:
            attempts.append(wh.snapshot_id(first))
            wh.upsert_bars(first, "raw.bars_daily", bars("NEW", 4.0), source="first", in_transaction=True)
            if len(attempts) == 1:  # another writer commits while this transaction is open
                wh.upsert_bars(second, "raw.bars_daily", bars("NEW", 5.0), source="second")

        wh.transaction(first, load, wait=30)
        assert len(attempts) == 2 and attempts[1] > attempts[0], attempts  # again, on the newer snapshot
        rows = wh.fetch_frame(first, "SELECT symbol, source, open, count(*) AS n, count(DISTINCT ts) AS keys "
                                     "FROM raw.bars_daily GROUP BY ALL ORDER BY symbol")
        assert rows.to_dicts() == [{"symbol": "AAA", "source": "second", "open": 3.0, "n": 10, "keys": 10},
                                   {"symbol": "NEW", "source": "first", "open": 4.0, "n": 10, "keys": 10}]
    finally:
        first.close()
        second.close()


def test_concurrent_loads_from_processes_lose_and_double_nothing(pg_lake, tmp_path) -> None:
    """Three processes upserting overlapping symbols 15 times each, started together: commits
    conflict, each is run again, and each symbol ends with its 10 bars, all from one load."""
    loc, _ = pg_lake
    with wh.writer(loc):
        pass
    go = tmp_path / "go"
    script = (
        "import sys, time\nfrom datetime import datetime, timedelta\nfrom pathlib import Path\n"
        "import polars as pl\n"
        "from trading_pipeline.marketdata import retry, warehouse as wh\n"
        "tag, go = sys.argv[1], Path(sys.argv[3])\n"
        "retries = []\n"
        "real = retry.LockWait.retry\n"
        "retry.LockWait.retry = lambda self, exc: retries.append(str(exc)) or real(self, exc)\n"
        "con = wh.connect(sys.argv[2])\n"
        "while not go.exists():\n"
        "    time.sleep(0.01)\n"
        "for i in range(15):\n"
        "    ts = [datetime(2013, 1, 2) + timedelta(days=d) for d in range(10)]\n"
        "    for sym in (f'{tag}{i % 3}', 'SHARED'):\n"
        "        df = pl.DataFrame({'symbol': [sym] * 10, 'timeframe': ['1d'] * 10, 'ts': ts,\n"
        "                           'session_date': [t.date() for t in ts], 'open': [float(i)] * 10,\n"
        "                           'high': [i + 1.0] * 10, 'low': [i - 1.0] * 10, 'close': [float(i)] * 10,\n"
        "                           'volume': [1.0] * 10})\n"
        "        wh.upsert_bars(con, 'raw.bars_daily', df, source=f'{tag}:{i}')\n"
        "print(len(retries), flush=True)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, tag, loc, str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tag in ("A", "B", "C")]
    time.sleep(1)
    go.touch()
    retried = 0
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        retried += int(out.split()[-1])
    con = wh.connect(loc, read_only=True)
    try:
        got = wh.fetch_frame(con, "SELECT symbol, count(*) AS n, count(DISTINCT ts) AS keys, "
                                  "count(DISTINCT source) AS loads FROM raw.bars_daily GROUP BY symbol ORDER BY symbol")
    finally:
        con.close()
    symbols = sorted([f"{t}{i}" for t in "ABC" for i in range(3)] + ["SHARED"])
    assert got.to_dicts() == [{"symbol": s, "n": 10, "keys": 10, "loads": 1} for s in symbols]
    assert retried > 0, "no commit conflicted: the writers did not overlap"


# ---- end to end: `trading ingest` and `trading scan` at once, a reader throughout -------------

READER = r'''
import json, sys, time
from pathlib import Path
from trading_pipeline.marketdata import warehouse as wh

def off_cpu_waiting():
    """Seconds this thread has spent neither running nor runnable (blocked: a lock, the
    network), from the wall clock, its CPU time and its run-queue wait (schedstat)."""
    run_ns, queue_ns, _ = (int(x) for x in Path("/proc/thread-self/schedstat").read_text().split())
    return time.perf_counter() - (run_ns + queue_ns) / 1e9

loc, stop = sys.argv[1], Path(sys.argv[2])
con = wh.connect(loc, read_only=True)
con.execute("SET threads = 1")  # the query runs on this thread: its schedstat tells its waits
wall, blocked, errors, seen = [], [], [], []
while True:
    done = stop.exists()
    t0, b0 = time.perf_counter(), off_cpu_waiting()
    try:
        rows = con.sql("SELECT symbol, count(*), count(DISTINCT ts) FROM raw.bars_daily GROUP BY symbol").fetchall()
        seen.append([wh.snapshot_id(con), rows])
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    wall.append(time.perf_counter() - t0)
    blocked.append(off_cpu_waiting() - b0)
    if len(wall) == 1:
        print("ready", flush=True)
    if done:
        break
    time.sleep(0.05)
con.close()
print(json.dumps({"wall": wall, "blocked": blocked, "errors": errors, "seen": seen}), flush=True)
'''


def _bar_file(path: Path, symbols: list[str]) -> None:
    lines = ["symbol,date,open,high,low,close,volume"]
    for k, s in enumerate(symbols):
        for j, d in enumerate(SESSIONS):
            o = 40.0 + k + j * 0.25
            lines.append(f"{s},{d},{o:.2f},{o + 0.6:.2f},{o - 0.4:.2f},{o + 0.2:.2f},{100_000 + j}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_ingest_and_a_scan_at_once_with_a_reader(pg_lake, tmp_path) -> None:
    """Two homes (two machines) on one Postgres lake: `trading ingest` of 20 symbols in one,
    `trading scan` (the sample's bars for a session, then dbt) in the other, at once; a reader
    process queries the bars in a loop throughout. Nothing is lost or doubled, every snapshot
    the reader sees holds each load whole or not at all, and the reader never waits."""
    loc, data = pg_lake
    with wh.writer(loc):  # the lake and its raw tables, as a first load would leave them
        pass
    loaded = [f"L{i:02d}" for i in range(20)]
    _bar_file(tmp_path / "bars" / "bars.csv", loaded)
    sampled = ["GOOG", "SYN0000", "SYN0001"]  # TRADING_SAMPLE_SYMBOLS=2 beside GOOG

    base = {**os.environ, "TRADING_WAREHOUSE": loc, "TRADING_WAREHOUSE_DATA_PATH": str(data)}
    trading = str(Path(sys.executable).parent / "trading")
    stop = tmp_path / "stop-reader"
    reader = subprocess.Popen([sys.executable, "-c", READER, loc, str(stop)], env=base,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()[-3000:]
        t0 = time.monotonic()
        ingest = subprocess.Popen([trading, "ingest", str(tmp_path / "bars"), "--json"],
                                  env={**base, "TRADING_HOME": str(tmp_path / "home-ingest")},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        scan = subprocess.Popen([trading, "scan", "--date", SCAN_DAY.isoformat(), "--json"],
                                env={**base, "TRADING_HOME": str(tmp_path / "home-scan"),
                                     "TRADING_DATA_SOURCE": "sample", "TRADING_SAMPLE_SYMBOLS": "2"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        outs = {name: (p, *p.communicate(timeout=800)) for name, p in (("ingest", ingest), ("scan", scan))}
        took = time.monotonic() - t0
    finally:
        stop.touch()
    out, err = reader.communicate(timeout=60)
    for name, (p, stdout, stderr) in outs.items():
        assert p.returncode == 0, f"{name} failed ({p.returncode}):\n{stdout[-2000:]}\n{stderr[-3000:]}"
    assert json.loads(outs["ingest"][1])["loaded"] == len(loaded) * len(SESSIONS)
    assert json.loads(outs["scan"][1])["session"] == SCAN_DAY.isoformat()

    # nothing lost or doubled
    con = wh.connect(loc, read_only=True)
    try:
        got = dict((s, (n, k)) for s, n, k in con.sql(
            "SELECT symbol, count(*), count(DISTINCT (timeframe, ts)) FROM raw.bars_daily GROUP BY symbol").fetchall())
        ind = wh.fetch_one(con, "SELECT count(*), count(DISTINCT (symbol, ts)) FROM marts.indicators_daily")
        sig = wh.fetch_one(con, "SELECT count(*), count(DISTINCT (scan, symbol, timeframe, ts, kind)) FROM marts.signals")
        scanned = {r[0] for r in con.sql("SELECT DISTINCT symbol FROM marts.indicators_daily WHERE ts = ?",
                                         params=[datetime.combine(SCAN_DAY, datetime.min.time())]).fetchall()}
    finally:
        con.close()
    expected = {s: (len(SESSIONS), len(SESSIONS)) for s in loaded} | {s: (1, 1) for s in sampled}
    assert got == expected
    assert ind[0] == ind[1] and ind[0] > 0 and sig[0] == sig[1]
    assert set(sampled) <= scanned  # dbt built the scanned session's bars

    # the reader: never an error, never blocked, each load whole or absent in every snapshot
    lines = out.strip().splitlines()
    assert reader.returncode == 0 and lines, err[-3000:]
    seen = json.loads(lines[-1])
    assert seen["errors"] == []
    for snap, rows in seen["seen"]:
        counts = {s: (n, k) for s, n, k in rows}
        for group, per_symbol in ((loaded, len(SESSIONS)), (sampled, 1)):
            present = {s: counts.get(s) for s in group}
            assert all(v is None for v in present.values()) or all(v == (per_symbol, per_symbol) for v in present.values()), \
                f"snapshot {snap}: a load seen in part: {present}"
    snapshots = {snap for snap, _ in seen["seen"]}
    assert len(snapshots) >= 2, "the reader saw no commit: it did not read while the writers ran"
    wall, blocked = sorted(seen["wall"]), sorted(seen["blocked"])
    summary = (f"writers {took:.1f} s; reader: {len(wall)} queries over {len(snapshots)} snapshots, "
               f"wall p50 {wall[len(wall) // 2] * 1000:.0f} ms max {wall[-1] * 1000:.0f} ms, "
               f"blocked p50 {blocked[len(blocked) // 2] * 1000:.0f} ms max {blocked[-1] * 1000:.0f} ms")
    print(summary)
    assert blocked[-1] < 1.0, summary
