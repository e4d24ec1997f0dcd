"""`trading sql` on the DuckLake warehouse (issue 12), as a user runs it (subprocesses, a real lake
with a SQLite catalog): it reads the last committed snapshot while a writer holds a transaction,
time-travels with --as-of (a version, a timestamp, a Dagster run), refuses what it cannot read
(exit 2, nothing written), prints the ATTACH another DuckDB client needs, and has a prompt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from trading_pipeline.marketdata import warehouse

pytestmark = [pytest.mark.timeout(120)]
TRADING = str(Path(sys.executable).parent / "trading")  # .venv/bin/trading


def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TRADING_WAREHOUSE", "DAGSTER_HOME")}
    return {**env, "TRADING_HOME": str(home), "COLUMNS": "120", **extra}


def cli(home: Path, *args: str, stdin: str | None = None, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([TRADING, *args], env=_env(home, **extra), input=stdin, capture_output=True, text=True,
                          timeout=60)


def lake_of(home: Path) -> str:
    return f"ducklake:sqlite:{home / 'warehouse' / 'catalog.sqlite'}"  # the default under TRADING_HOME


def _bars(symbol: str, start: date, n: int) -> pl.DataFrame:
    days = [start + timedelta(days=i) for i in range(n)]
    return pl.DataFrame({
        "symbol": [symbol] * n, "timeframe": ["1d"] * n, "ts": [datetime(d.year, d.month, d.day) for d in days],
        "session_date": days, "open": [10.0] * n, "high": [11.0] * n, "low": [9.0] * n, "close": [10.5] * n,
        "volume": [1000.0] * n,
    })


def make_lake(home: Path) -> dict:
    """A lake with 3 bars at snapshot ``v1``, 5 at ``v2``, then a marts table (the latest)."""
    con = warehouse.connect(lake_of(home))
    try:
        warehouse.ensure_schema(con)
        warehouse.upsert_bars(con, "raw.bars_daily", _bars("AAA", date(2024, 1, 2), 3), "test")
        v1 = warehouse.snapshot_id(con)
        warehouse.upsert_bars(con, "raw.bars_daily", _bars("BBB", date(2024, 1, 2), 2), "test")
        v2 = warehouse.snapshot_id(con)
        con.execute("CREATE TABLE marts.signals AS SELECT 'AAA' AS symbol, 'breakout_up' AS kind, 1.5 AS score")
        times = dict(con.sql("SELECT snapshot_id, snapshot_time FROM lake.snapshots()").fetchall())
    finally:
        con.close()
    between = times[v1] + (times[v2] - times[v1]) / 2
    return {"home": home, "v1": v1, "v2": v2, "between": between.isoformat(), "empty": v1 - 1}


def _snapshot_count(home: Path) -> int:
    con = warehouse.connect(lake_of(home), read_only=True)
    try:
        return con.sql("SELECT count(*) FROM lake.snapshots()").fetchone()[0]
    finally:
        con.close()


def _rows(r: subprocess.CompletedProcess) -> list[dict]:
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> dict:
    return make_lake(tmp_path_factory.mktemp("lake") / "home")


COUNT = "SELECT count(*) AS n FROM raw.bars_daily"


def test_reads_the_last_commit_while_a_writer_holds_a_transaction(lake):
    home = lake["home"]
    t0 = time.monotonic()
    assert _rows(cli(home, "sql", COUNT, "--json")) == [{"n": 5}]
    baseline = time.monotonic() - t0
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from trading_pipeline.marketdata import warehouse\n"
         "con = warehouse.connect(sys.argv[1])\n"
         "con.execute('BEGIN TRANSACTION')\n"
         "con.execute(\"INSERT INTO raw.bars_daily SELECT 'UNCOMMITTED', '1d', TIMESTAMP '2024-03-01' + "
         "INTERVAL (i) DAY, DATE '2024-03-01' + i::INT, 1, 2, 0.5, 1.5, 100, 'w', now()::TIMESTAMP FROM range(100) t(i)\")\n"
         "con.execute('CREATE TABLE marts.uncommitted AS SELECT 1 AS x')\n"
         "print('held', flush=True)\n"
         "time.sleep(60)\n", lake_of(home)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "held", writer.stderr.read()
        # the reader's own work (what `trading sql` does after start-up), while the writer holds on
        t0 = time.monotonic()
        con = warehouse.connect(lake_of(home), read_only=True)
        n = con.sql(COUNT).fetchone()[0]
        con.close()
        took = time.monotonic() - t0
        assert n == 5 and took < 1.0, (n, took)
        # the command: the last committed rows, not the uncommitted ones (nor their table), no wait
        t0 = time.monotonic()
        r = cli(home, "sql", "SELECT symbol, count(*) AS n, (SELECT count(*) FROM information_schema.tables "
                "WHERE table_name = 'uncommitted') AS uncommitted_tables FROM raw.bars_daily GROUP BY symbol "
                "ORDER BY symbol", "--json")
        took = time.monotonic() - t0
        assert _rows(r) == [{"symbol": "AAA", "n": 3, "uncommitted_tables": 0},
                            {"symbol": "BBB", "n": 2, "uncommitted_tables": 0}]
        assert took < baseline + 2.0, f"{took:.2f} s with a writer vs {baseline:.2f} s without"
        assert writer.poll() is None  # still holding its transaction: nobody waited for it
    finally:
        writer.kill()
        writer.wait(timeout=10)


def test_as_of_a_version_or_a_time_reads_the_older_snapshot(lake):
    home = lake["home"]
    assert _rows(cli(home, "sql", COUNT, "--as-of", str(lake["v1"]), "--json")) == [{"n": 3}]
    assert _rows(cli(home, "sql", COUNT, "--as-of", lake["between"], "--json")) == [{"n": 3}]
    r = cli(home, "sql", COUNT, "--as-of", str(lake["v2"]))  # the table view says what it reads
    assert r.returncode == 0, r.stderr
    assert f"as of lake snapshot {lake['v2']} (" in r.stdout and "│ 5 │" in r.stdout, r.stdout


def _refused(home: Path, as_of: str, said: str, **extra) -> str:
    """``trading sql --as-of`` refused, exit 2, one error line saying ``said``: its stderr."""
    r = cli(home, "sql", COUNT, "--as-of", as_of, **extra)
    assert r.returncode == 2, (as_of, r.stdout, r.stderr)
    assert r.stderr.startswith("error:") and said in r.stderr and "Traceback" not in r.stderr, (as_of, r.stderr)
    assert r.stdout == "", r.stdout
    return r.stderr


def test_as_of_that_names_no_snapshot_exits_2(lake):
    home = lake["home"]
    before, had_dagster = _snapshot_count(home), (home / "dagster").exists()
    _refused(home, "yesterday-ish", "is not an ISO timestamp, a snapshot version or a Dagster run id")
    _refused(home, "abc123", "a run id prefix needs at least 8 characters")
    _refused(home, "deadbeef", "no Dagster run with that id")
    assert _snapshot_count(home) == before  # nothing written
    assert (home / "dagster").exists() == had_dagster  # looking for a run created no Dagster instance


def test_as_of_outside_the_lake_exits_2(lake):
    home = lake["home"]
    before = _snapshot_count(home)
    _refused(home, "2001-01-01T00:00:00Z", "2001-01-01 00:00:00 UTC is before the lake existed")
    _refused(home, "999999", "there is no lake snapshot 999999 yet; the latest is")
    assert _snapshot_count(home) == before


def test_as_of_an_expired_snapshot_exits_2(tmp_path):
    made = make_lake(tmp_path / "home")
    home = made["home"]
    con = warehouse.connect(lake_of(home))
    con.execute(f"CALL ducklake_expire_snapshots('lake', versions => [{made['v1']}])")
    con.close()
    before = _snapshot_count(home)
    _refused(home, str(made["v1"]), f"lake snapshot {made['v1']} has been expired")
    _refused(home, made["between"], "have been expired")  # the snapshot current then is gone
    assert _snapshot_count(home) == before


def test_a_file_warehouse_reads_its_published_snapshot_and_has_no_history(tmp_path):
    from trading_pipeline.serving.publish import publish_snapshot

    home = tmp_path / "old"
    with warehouse.writer(home / "warehouse.duckdb") as con:
        con.execute("CREATE TABLE marts.signals AS SELECT 'SYM' || i AS symbol FROM range(4) t(i)")
        publish_snapshot(home / "warehouse.duckdb", home / "serving", con=con)
    file_wh = {"TRADING_WAREHOUSE": str(home / "warehouse.duckdb")}
    assert _rows(cli(home, "sql", "SELECT count(*) AS n FROM marts.signals", "--json", **file_wh)) == [{"n": 4}]
    _refused(home, "1", "--as-of needs the DuckLake warehouse", **file_wh)
    r = cli(home, "sql", "--print-attach", **file_wh)
    assert r.returncode == 2 and "--print-attach needs the DuckLake warehouse" in r.stderr, r.stderr


READ_WITH_DUCKDB = """import duckdb, json, sys
con = duckdb.connect()  # a fresh client: nothing of ours but the statements
con.execute(sys.stdin.read())
print(json.dumps({"bars": con.sql("SELECT count(*) FROM raw.bars_daily").fetchone()[0],
                  "signals": con.sql("SELECT count(*) FROM marts.signals").fetchone()[0]
                  if con.sql("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'marts'").fetchone()[0]
                  else None}))
"""


def test_print_attach_round_trip(lake):
    home = lake["home"]
    r = cli(home, "sql", "--print-attach")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    for part in ("SET extension_directory = '", "SET autoinstall_known_extensions = false;", "LOAD ducklake;",
                 f"ATTACH '{lake_of(home)}' AS lake (READ_ONLY);", "USE lake;"):
        assert part in text, text
    out = subprocess.run([sys.executable, "-c", READ_WITH_DUCKDB], input=text, capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("TRADING")})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"bars": 5, "signals": 1}
    # pinned: as JSON, the older snapshot
    r = cli(home, "sql", "--print-attach", "--as-of", str(lake["v1"]), "--json")
    assert r.returncode == 0, r.stderr
    spec = json.loads(r.stdout)
    assert spec["snapshot_version"] == lake["v1"] and spec["warehouse"] == lake_of(home)
    assert f"SNAPSHOT_VERSION {lake['v1']}" in spec["statements"][-2]
    out = subprocess.run([sys.executable, "-c", READ_WITH_DUCKDB], input="\n".join(spec["statements"]),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"bars": 3, "signals": None}


def test_interactive_prompt_from_stdin(lake):
    home = lake["home"]
    script = ("SELECT count(*) AS n\n  FROM raw.bars_daily;\n"  # a statement over two lines
              "SELECT * FROM no_such_table;\n"                  # an error: printed, the prompt goes on
              "\n"
              "SELECT 42 AS answer;\n"
              ".quit\n"
              "SELECT 'never' AS after_quit;\n")
    r = cli(home, "sql", stdin=script)
    assert r.returncode == 0, r.stderr
    assert "│ 5 │" in r.stdout and "answer" in r.stdout and "42" in r.stdout, r.stdout
    assert "after_quit" not in r.stdout
    assert "no_such_table" in r.stderr and "error:" in r.stderr, r.stderr
    # JSON, pinned to an older snapshot, ended by EOF (the last statement without its ';')
    r = cli(home, "sql", "--json", "--as-of", str(lake["v1"]), stdin="SELECT count(*) AS n FROM raw.bars_daily")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"n": 3}]


def test_help_documents_the_lake_reader(lake):
    out = " ".join(cli(lake["home"], "sql", "--help").stdout.split())
    for said in ("--as-of", "--print-attach", "last committed snapshot", "snapshot version", "run id",
                 "interactive prompt", "last published serving snapshot"):
        assert said in out, said


@pytest.fixture(scope="module")
def dagster_runs(lake) -> dict:
    """Runs in the lake home's Dagster instance: one that published snapshot v1 (and recorded a
    later one elsewhere), one that recorded snapshots only on other assets, one that recorded none."""
    import dagster as dg

    from trading_pipeline import runs
    from trading_pipeline.settings import Settings

    def asset(key: list[str], **metadata):
        @dg.asset(key=key, name=None)
        def _a():
            return dg.MaterializeResult(metadata={k: dg.MetadataValue.int(v) for k, v in metadata.items()})
        return _a

    inst = runs.instance(Settings(home=lake["home"]))
    published = dg.materialize([asset(["serving", "snapshot"], lake_snapshot_id=lake["v1"]),
                                asset(["marts", "other"], lake_snapshot_id=lake["v2"])], instance=inst)
    others = dg.materialize([asset(["marts", "a"], lake_snapshot_id=lake["empty"]),
                             asset(["marts", "b"], lake_snapshot_id=lake["v1"])], instance=inst)
    none = dg.materialize([asset(["marts", "c"], rows=3)], instance=inst)
    return {"published": published.run_id, "others": others.run_id, "none": none.run_id}


def test_as_of_a_dagster_run_prefix(lake, dagster_runs):
    # the first 8 characters of the run id: the snapshot its publish recorded (not the later one elsewhere)
    assert _rows(cli(lake["home"], "sql", COUNT, "--as-of", dagster_runs["published"][:8], "--json")) == [{"n": 3}]


def test_as_of_a_run_without_a_publish(lake, dagster_runs):
    # no serving snapshot in the run: the largest snapshot any of its materializations recorded
    assert _rows(cli(lake["home"], "sql", COUNT, "--as-of", dagster_runs["others"], "--json")) == [{"n": 3}]


def test_as_of_a_run_that_recorded_no_snapshot(lake, dagster_runs):
    said = _refused(lake["home"], dagster_runs["none"][:8], "recorded no lake snapshot")
    assert f"run {dagster_runs['none']} (" in said, said  # named in full
