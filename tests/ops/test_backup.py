"""Backups that restore (trading_pipeline/backup/): a real home with paper orders, fills and
positions placed through the trading services and the bundled sample bars in the lake; backed up,
wiped, restored through the `trading backup` CLI, and every refusal leaves the home untouched.
The nightly job runs in-process; a Postgres ops store goes through pg_dump/pg_restore on the
throwaway cluster (tests/pg.py)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.scans.dbt_fixtures import eurusd_hourly, goog_daily, load
from trading_pipeline import backup, runs
from trading_pipeline.settings import get_settings
from trading_pipeline.trading.execution import sync_open_orders
from trading_pipeline.trading.services import make_broker, place_order, risk_engine, warehouse_feed
from trading_pipeline.trading.store import OpsStore

pytestmark = [pytest.mark.timeout(600)]
RUNNER = CliRunner()


def cli(*args: str, code: int = 0) -> dict:
    from trading_pipeline.cli.main import app

    res = RUNNER.invoke(app, ["backup", *args, "--json"])
    assert res.exit_code == code, res.output
    return json.loads(res.stdout)


def _trade(settings) -> None:
    """Two paper orders through the real services: a market buy that fills on the next bar (a
    fill, a position) and a resting limit buy (an open order)."""
    goog = goog_daily()
    load(settings.warehouse_path, goog.head(goog.height - 1))
    store = OpsStore.from_settings(settings)
    try:
        feed = warehouse_feed(settings)
        broker = make_broker(settings, store, "paper", feed=feed)
        engine = risk_engine(settings, store, "paper")
        for qty, limit in (("10", None), ("5", "790")):
            placed = place_order(store=store, broker=broker, feed=feed, risk_engine=engine, account="paper",
                                 symbol="GOOG", side="buy", quantity=Decimal(qty),
                                 limit_price=Decimal(limit) if limit else None, time_in_force="gtc")
            assert placed.result.action == "submitted", placed.result
        load(settings.warehouse_path, goog.tail(1))  # the next session: the market order fills
        broker.process_bars()
        assert [o.status.value for o in sync_open_orders(store, broker)] == ["filled"]
    finally:
        store.close()


def _one_more_order(settings) -> str:
    """A resting order placed after the backup: a restore must take it away again."""
    store = OpsStore.from_settings(settings)
    try:
        feed = warehouse_feed(settings)
        placed = place_order(store=store, broker=make_broker(settings, store, "paper", feed=feed), feed=feed,
                             risk_engine=risk_engine(settings, store, "paper"), account="paper", symbol="GOOG",
                             side="buy", quantity=Decimal("1"), limit_price=Decimal("800"), time_in_force="gtc")
        assert placed.result.action == "submitted", placed.result
        return placed.request.client_order_id
    finally:
        store.close()


@pytest.fixture
def home(trading_home, monkeypatch):
    for var in ("TRADING_OPS_URL", "TRADING_ACCOUNTS_FILE", "TRADING_RISK_FILE", "TRADING_ACCOUNT",
                "TRADING_BACKUP_DIR", "TRADING_BACKUP_KEEP", "TRADING_WAREHOUSE_DATA_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRADING_BROKER", "paper")
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_dirs()
    _trade(settings)
    load(settings.warehouse_path, eurusd_hourly())
    return settings


def _book(settings) -> dict:
    """What a restore must give back, row for row."""
    store = OpsStore.from_settings(settings)
    try:
        return {"orders": sorted((o.client_order_id, o.status.value, str(o.filled_quantity)) for o in store.list_orders()),
                "fills": sorted(str(r) for r in store.rows("fills")),
                "positions": sorted(str(r) for r in store.rows("positions"))}
    finally:
        store.close()


def _wipe(settings) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.home / 'ops.sqlite'}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(settings.home / "warehouse")


def _fingerprint(settings) -> dict[str, str]:
    """sha256 of every file of the ops store and the lake: a refused restore changes none."""
    files = [settings.home / "ops.sqlite", *sorted((settings.home / "warehouse").rglob("*"))]
    return {str(p): backup.sha256(p) for p in files if p.is_file()}


def test_create_wipe_restore_gives_back_every_order_fill_position_and_bar(home, tmp_path):
    before, book = backup.counts_of(home), _book(home)
    assert before["orders"] == 2 and before["fills"] == 1 and before["positions"] == 1
    assert before["bars_daily"] == goog_daily().height and before["bars_intraday"] == eurusd_hourly().height > 0
    made = cli("create", str(tmp_path / "bk"))
    assert made["counts"] == before
    from trading_pipeline.trading.store import migrations

    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    assert manifest["ops_store"]["schema_revision"] == migrations.head() and manifest["tool_version"]
    assert manifest["warehouse"]["catalog_version"] and manifest["warehouse"]["data_files"] >= 1
    listed = {f["path"] for f in manifest["files"]}
    assert "ops/ops.sqlite" in listed and "warehouse/catalog.sqlite" in listed
    assert all(backup.sha256(tmp_path / "bk" / f["path"]) == f["sha256"] for f in manifest["files"])

    _wipe(home)
    assert not (home.home / "ops.sqlite").exists()
    out = cli("restore", str(tmp_path / "bk"))
    assert out["counts"] == before == out["manifest_counts"]
    assert _book(home) == book
    store = OpsStore.from_settings(home)
    try:
        ks = store.kill_switch()
    finally:
        store.close()
    assert ks.active and "reconcile" in ks.reason  # fills made after the backup are not in it
    # the lake reads as before, through the warehouse's own connect
    from trading_pipeline.marketdata import warehouse

    with warehouse.connect(home.warehouse_path, read_only=True) as con:
        assert con.sql("SELECT round(sum(close), 2) FROM raw.bars_daily").fetchone()[0] == round(goog_daily()["close"].sum(), 2)


def test_restore_over_a_home_that_moved_on_takes_it_back_to_the_backup(home, tmp_path):
    """Not wiped: the store has a WAL and an order the backup lacks, the lake newer bars."""
    before, book = backup.counts_of(home), _book(home)
    cli("create", str(tmp_path / "bk"))
    later = _one_more_order(home)
    from datetime import date

    from tests.scans.dbt_fixtures import synthetic

    load(home.warehouse_path, synthetic(2, date(2013, 3, 4), date(2013, 3, 8), "1d"))
    assert backup.counts_of(home)["orders"] == before["orders"] + 1
    assert backup.counts_of(home)["bars_daily"] > before["bars_daily"]
    out = cli("restore", str(tmp_path / "bk"))
    assert out["counts"] == before and _book(home) == book and later not in str(_book(home))


def test_restore_into_another_home_points_the_lake_at_its_own_data(home, tmp_path, monkeypatch):
    cli("create", str(tmp_path / "bk"))
    monkeypatch.setenv("TRADING_HOME", str(tmp_path / "elsewhere"))
    get_settings.cache_clear()
    other = get_settings()
    out = cli("restore", str(tmp_path / "bk"))
    assert out["counts"] == backup.counts_of(home)
    con = sqlite3.connect(other.home / "warehouse" / "catalog.sqlite")
    try:
        data_path = con.execute("SELECT value FROM ducklake_metadata WHERE key = 'data_path'").fetchone()[0]
    finally:
        con.close()
    assert data_path == f"{other.home / 'warehouse' / 'data'}/"


@pytest.fixture
def made(home, tmp_path):
    cli("create", str(tmp_path / "bk"))
    return tmp_path / "bk"


def test_a_corrupt_backup_is_refused_and_nothing_is_overwritten(home, made):
    before = _fingerprint(home)
    data = next(p for p in (made / "warehouse" / "data").rglob("*.parquet"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    out = cli("restore", str(made), code=2)
    assert "does not match its sha256" in out["error"] and "nothing was restored" in out["hint"]
    assert _fingerprint(home) == before


def test_a_backup_with_missing_files_is_refused(home, made):
    before = _fingerprint(home)
    (made / "ops" / "ops.sqlite").unlink()
    out = cli("restore", str(made), code=2)
    assert "1 file(s) missing, e.g. ops/ops.sqlite" in out["error"]
    assert _fingerprint(home) == before
    shutil.rmtree(made)
    made.mkdir()
    assert "no manifest.json" in cli("restore", str(made), code=2)["error"]
    (made / "manifest.json").write_text('{"format": 1, "files": [{"path": "ops/ops.sqlite"}]}')
    out = cli("restore", str(made), code=2)
    assert "manifest.json is unreadable" in out["error"] and "use another one" in out["hint"]
    assert _fingerprint(home) == before


def test_a_backup_from_a_newer_schema_revision_is_refused(home, made):
    """As a newer release would write it: the store stamped with a revision this code lacks,
    the manifest saying so, checksums right."""
    before = _fingerprint(home)
    ops = made / "ops" / "ops.sqlite"
    con = sqlite3.connect(ops)
    with con:
        con.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    con.close()
    manifest = json.loads((made / "manifest.json").read_text())
    manifest["ops_store"]["schema_revision"] = "0099_from_the_future"
    for f in manifest["files"]:
        if f["path"] == "ops/ops.sqlite":
            f["sha256"], f["bytes"] = backup.sha256(ops), ops.stat().st_size
    (made / "manifest.json").write_text(json.dumps(manifest))
    out = cli("restore", str(made), code=2)
    assert "'0099_from_the_future', newer than this release knows" in out["error"]
    assert _fingerprint(home) == before


def test_restoring_onto_a_running_home_is_refused_unless_forced(home, made):
    """Running: a Dagster run in flight in the home's instance, or another process holding the ops
    store open (the API does after its first request). --force engages the kill switch and waits
    for runs; a run that does not finish in time is still a refusal."""
    import dagster as dg

    inst = runs.instance(home)
    run = dg.DagsterRun(job_name="scan_daily", run_id="0" * 8 + "-1111-2222-3333-444444444444",
                        status=dg.DagsterRunStatus.STARTED,
                        tags={runs.PID_TAG: str(os.getppid()), runs.HOST_TAG: __import__("socket").gethostname()})
    inst.add_run(run)
    before = _fingerprint(home)
    out = cli("restore", str(made), code=2)
    assert "the home is running: Dagster run 00000000 (scan_daily) is STARTED" in out["error"] and "--force" in out["hint"]
    assert _fingerprint(home) == before
    out = cli("restore", str(made), "--force", "--wait", "1", code=2)
    assert "runs still in flight after 1 s" in out["error"]
    store = OpsStore.from_settings(home)
    try:
        assert store.kill_switch().active  # --force stopped the writers first
        store.set_kill_switch(False)
    finally:
        store.close()
    fp = _fingerprint(home)
    assert {k: v for k, v in fp.items() if "ops.sqlite" not in k} == {k: v for k, v in before.items() if "ops.sqlite" not in k}
    inst.report_run_failed(inst.get_run_by_id(run.run_id), "test: the run ended")

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT count(*) FROM orders').fetchone(); "
        "print('open', flush=True); time.sleep(120)"), str(home.home / "ops.sqlite")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        out = cli("restore", str(made), code=2)
        assert f"process {holder.pid}" in out["error"] and "has ops.sqlite open" in out["error"]
        out = cli("restore", str(made), "--force")
        assert any(f"process {holder.pid}" in w and "restart it" in w for w in out["warnings"])
        assert out["counts"] == out["manifest_counts"]
    finally:
        holder.kill()
        holder.wait()


def test_the_backup_job_writes_a_verified_backup_and_applies_retention(home, monkeypatch, tmp_path):
    monkeypatch.setenv("TRADING_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("TRADING_BACKUP_KEEP", "2")
    get_settings.cache_clear()
    settings = get_settings()
    old = [backup.nightly(settings, now=datetime(2026, 1, d, 2, 15, tzinfo=UTC))["path"] for d in (1, 2)]
    foreign = tmp_path / "backups" / "keep-me"
    foreign.mkdir()
    result = runs.run_job("backup", settings)
    assert result.success, runs.failure_message(result)
    out = result.output_for_node("backup_home")
    assert out["deleted"] == [Path(old[0]).name] and Path(old[1]).exists() and foreign.exists()
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == sorted([Path(old[1]).name, Path(out["path"]).name, "keep-me"])
    assert backup.verify(Path(out["path"]))["counts"] == backup.counts_of(settings)
    # a backup that cannot be made deletes nothing: a lake file gone from under its catalog
    victim = next((settings.home / "warehouse" / "data").rglob("*.parquet"))
    victim.unlink()
    failed = runs.run_job("backup", settings)
    assert not failed.success and "went away during the backup" in runs.failure_message(failed)
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == sorted([Path(old[1]).name, Path(out["path"]).name, "keep-me"])


def test_the_schedule_is_off_by_default():
    import dagster as dg

    from trading_pipeline.definitions import defs

    schedule = defs().get_repository_def().get_schedule_def("backup_nightly")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED and schedule.job_name == "backup"
    with dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 2, 2, 15)) as ctx:
        assert [r.run_key for r in schedule.evaluate_tick(ctx).run_requests] == ["backup-2026-03-02"]


def test_a_postgres_ops_store_round_trips_and_a_sqlite_home_refuses_its_dump(trading_home, monkeypatch, pg_cluster,
                                                                             pg_database, tmp_path):
    for var in ("TRADING_ACCOUNTS_FILE", "TRADING_RISK_FILE", "TRADING_ACCOUNT", "TRADING_WAREHOUSE_DATA_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRADING_BROKER", "paper")
    monkeypatch.setenv("TRADING_OPS_URL", pg_cluster.url(pg_database))
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_dirs()
    _trade(settings)
    before, book = backup.counts_of(settings), _book(settings)
    assert before["fills"] == 1
    made = cli("create", str(tmp_path / "bk"))
    assert made["ops_store"]["kind"] == "postgresql" and (tmp_path / "bk" / "ops" / "ops.pgdump").stat().st_size > 0
    later = _one_more_order(settings)  # restored over tables that exist and moved on
    shutil.rmtree(settings.home / "warehouse")
    out = cli("restore", str(tmp_path / "bk"))
    assert out["counts"] == before and _book(settings) == book and later not in str(_book(settings))

    monkeypatch.delenv("TRADING_OPS_URL")  # a SQLite home: a pg_dump is not converted, it is refused
    get_settings.cache_clear()
    out = cli("restore", str(tmp_path / "bk"), code=2)
    assert "is postgresql but this home's is sqlite" in out["error"] and "TRADING_OPS_URL" in out["hint"]
    assert not (get_settings().home / "ops.sqlite").exists()


def test_create_refuses_a_folder_with_something_in_it(home, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    out = cli("create", str(tmp_path / "full"), code=1)
    assert "is not an empty folder" in out["error"] and (tmp_path / "full" / "x").read_text() == "mine"


def test_a_postgres_lake_catalog_round_trips_with_its_data_files(trading_home, monkeypatch, pg_cluster, tmp_path):
    """The scale-out lake: catalog in Postgres (pg_dump in an exported snapshot, restored in one
    psql transaction), data files in a shared folder (copied as for a SQLite catalog)."""
    catalog_db = pg_cluster.create_database("lake")
    for var in ("TRADING_OPS_URL", "TRADING_ACCOUNTS_FILE", "TRADING_RISK_FILE", "TRADING_ACCOUNT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRADING_BROKER", "paper")
    monkeypatch.setenv("TRADING_WAREHOUSE", f"ducklake:postgres:{pg_cluster.dsn(catalog_db)}")
    monkeypatch.setenv("TRADING_WAREHOUSE_DATA_PATH", str(tmp_path / "lake-data"))
    get_settings.cache_clear()
    try:
        settings = get_settings()
        settings.ensure_dirs()
        _trade(settings)
        before, book = backup.counts_of(settings), _book(settings)
        assert before["bars_daily"] == goog_daily().height and before["fills"] == 1
        made = cli("create", str(tmp_path / "bk"))
        assert made["warehouse"]["catalog_type"] == "postgres" and made["warehouse"]["data_files"] >= 1
        assert (tmp_path / "bk" / "warehouse" / "catalog.pgdump").stat().st_size > 0

        with pg_cluster.connect(catalog_db) as conn:  # wipe: the catalog, the data, the ops store
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        shutil.rmtree(tmp_path / "lake-data")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{settings.home / 'ops.sqlite'}{suffix}").unlink(missing_ok=True)
        out = cli("restore", str(tmp_path / "bk"))
        assert out["counts"] == before and out["warnings"] == [] and _book(settings) == book

        monkeypatch.delenv("TRADING_WAREHOUSE")  # a home whose lake has a SQLite catalog refuses it
        monkeypatch.delenv("TRADING_WAREHOUSE_DATA_PATH")
        get_settings.cache_clear()
        out = cli("restore", str(tmp_path / "bk"), code=2)
        assert "lake catalog is postgres but this home's is sqlite" in out["error"]
    finally:
        pg_cluster.drop_database(catalog_db)
