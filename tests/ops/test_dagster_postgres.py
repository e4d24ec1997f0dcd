"""Dagster's run, event-log and schedule storage in Postgres (deploy/dagster-postgres.yaml),
on a throwaway local cluster (tests/pg.py): real ingest runs through the CLI's path
(``runs.run_job``, TRADING_DAGSTER_YAML selecting the file), checked from Postgres itself;
and the ``duckdb_writer`` pool, whose one slot now lives in Postgres: a run holding it
makes the next run's step wait, and a dead holder is reaped and its slot freed."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from datetime import date

import dagster as dg
import pytest

from trading_pipeline import runs
from trading_pipeline.defs.bars import START_TAG
from trading_pipeline.settings import PROJECT_DIR, get_settings

GOOD = (
    "Date,Open,High,Low,Close,Volume\n2013-02-27,794.8,804.8,791.1,799.8,2522000\n"
    "2013-02-28,801.1,806.2,799.0,801.2,2265800\n2013-03-01,797.8,807.1,796.2,806.2,2175400\n"
)
DEPLOY_YAML = PROJECT_DIR / "deploy" / "dagster-postgres.yaml"
POOL = "duckdb_writer"


@pytest.fixture
def pg_dagster(trading_home, pg_cluster, pg_database, tmp_path, monkeypatch):
    """TRADING_HOME whose Dagster instance is deploy/dagster-postgres.yaml on a fresh database:
    (an open connection to it, the config file, a function opening another connection).

    The file is used as shipped, but for its fixed ``port: 5432``: the throwaway cluster
    listens on a free port (it must not collide with a real server or another test run).
    """
    text = DEPLOY_YAML.read_text()
    assert text.count("port: 5432\n") == 1
    cfg = tmp_path / "dagster-postgres.yaml"
    cfg.write_text(text.replace("port: 5432\n", f"port: {pg_cluster.port}\n"))
    monkeypatch.setenv("TRADING_DAGSTER_YAML", str(cfg))  # what the compose postgres profile sets
    monkeypatch.setenv("DAGSTER_POSTGRES_HOST", pg_cluster.host)
    monkeypatch.setenv("DAGSTER_POSTGRES_USER", pg_cluster.user)
    monkeypatch.setenv("DAGSTER_POSTGRES_PASSWORD", "unused-trust-auth")
    monkeypatch.setenv("DAGSTER_POSTGRES_DB", pg_database)
    get_settings.cache_clear()
    with pg_cluster.connect(pg_database) as conn:
        yield conn, cfg, lambda: pg_cluster.connect(pg_database)
    get_settings.cache_clear()


def ingest(path):
    return runs.run_job(
        "ingest_daily_bars", get_settings(),
        run_config={"ops": {"raw__bars_daily": {"config": {"source": "files", "path": str(path)}}}},
        start=date(2013, 2, 25), end=date(2013, 3, 8),
    )


def pool_slots(conn) -> list[tuple]:
    return conn.execute(
        "SELECT run_id, step_key FROM concurrency_slots WHERE concurrency_key = %s AND NOT deleted ORDER BY id",
        (POOL,),
    ).fetchall()


@pytest.mark.timeout(180)
def test_runs_events_checks_and_the_pool_live_in_postgres(pg_dagster, tmp_path) -> None:
    conn, cfg, connect = pg_dagster
    f = tmp_path / "GOOG.csv"
    f.write_text(GOOD)

    r1 = ingest(f)
    assert r1.success, runs.failure_message(r1)
    settings = get_settings()
    # the CLI installed the Postgres config (it used to copy the SQLite dagster.yaml over it)
    assert (settings.dagster_home / "dagster.yaml").read_text() == cfg.read_text()
    inst = runs.instance(settings)
    assert type(inst.run_storage).__name__ == "PostgresRunStorage"
    assert type(inst.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(inst.schedule_storage).__name__ == "PostgresScheduleStorage"
    assert not list(settings.dagster_home.rglob("*.db")), "no SQLite storage beside Postgres"

    # --- the run, as Postgres has it
    row = conn.execute("SELECT status, pipeline_name FROM runs WHERE run_id = %s", (r1.run_id,)).fetchone()
    assert row == ("SUCCESS", "ingest_daily_bars")
    tags = dict(conn.execute("SELECT key, value FROM run_tags WHERE run_id = %s", (r1.run_id,)).fetchall())
    assert tags[START_TAG] == "2013-02-25" and tags[runs.HOST_TAG] == socket.gethostname()
    kinds = {k for (k,) in conn.execute("SELECT DISTINCT dagster_event_type FROM event_logs WHERE run_id = %s", (r1.run_id,))}
    E = dg.DagsterEventType  # stored by value: RUN_START is "PIPELINE_START"
    assert {e.value for e in (E.RUN_START, E.STEP_SUCCESS, E.ASSET_MATERIALIZATION, E.ASSET_CHECK_EVALUATION,
                              E.RUN_SUCCESS)} <= kinds, sorted(map(str, kinds))
    assert not kinds & {E.STEP_FAILURE.value, E.RUN_FAILURE.value}

    # --- materializations: one event for the whole range, as the run reported
    mats = conn.execute(
        "SELECT asset_key, partition FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        (r1.run_id,),
    ).fetchall()
    reported = {(e.asset_key.to_string(), e.partition) for e in r1.get_asset_materialization_events()}
    assert reported and sorted(mats) == sorted(reported)
    assert {tuple(json.loads(k)) for k, _ in mats} >= {("raw", "bars_daily")}
    assert [p for _, p in mats] == [None]

    # --- asset checks: seven for the run, every one passed and resolved in the executions
    # table: no row is left PLANNED
    evals = r1.get_asset_check_evaluations()
    assert len(evals) == 7 and all(e.passed for e in evals)
    checks = conn.execute(
        "SELECT asset_key, check_name, partition, execution_status FROM asset_check_executions"
        " WHERE run_id = %s",
        (r1.run_id,),
    ).fetchall()
    assert sorted((json.loads(a)[-1], c, p) for a, c, p, _ in checks) == sorted(
        (e.asset_key.path[-1], e.check_name, e.partition) for e in evals
    )
    assert {s for _, _, _, s in checks} == {"SUCCEEDED"}
    assert conn.execute("SELECT count(*) FROM asset_check_executions WHERE execution_status = 'PLANNED'").fetchone()[0] == 0
    n_check_events = conn.execute(
        "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_CHECK_EVALUATION'",
        (r1.run_id,),
    ).fetchone()[0]
    assert n_check_events == 7

    # --- the duckdb_writer pool: created in Postgres at its one-slot default, used, free again
    limit, default = conn.execute(
        'SELECT "limit", using_default_limit FROM concurrency_limits WHERE concurrency_key = %s', (POOL,)
    ).fetchone()
    assert (limit, default) == (1, True)
    assert pool_slots(conn) == [(None, None)]

    job = runs.definitions().resolve_job_def("ingest_daily_bars")

    def run_holding_the_slot(pid: int) -> dg.DagsterRun:
        """A run of process ``pid`` that is STARTED and holds the pool's one slot."""
        run = inst.create_run_for_job(
            job_def=job, status=dg.DagsterRunStatus.STARTED,
            tags={runs.PID_TAG: str(pid), runs.HOST_TAG: socket.gethostname()},
        )
        assert inst.event_log_storage.claim_concurrency_slot(POOL, run.run_id, "raw__bars_daily").is_claimed
        assert pool_slots(conn) == [(run.run_id, "raw__bars_daily")]
        return run

    def status(run_id: str) -> str:
        return conn.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,)).fetchone()[0]

    # --- a run killed while holding the slot (kill -9: STARTED forever, slot taken) is
    # reaped by the next run (run_job reaps first), which then gets the slot and succeeds
    dead = subprocess.Popen(["true"])
    dead.wait()
    zombie = run_holding_the_slot(dead.pid)
    r2 = ingest(f)
    assert r2.success, runs.failure_message(r2)
    assert (status(zombie.run_id), status(r2.run_id)) == ("FAILURE", "SUCCESS")
    assert pool_slots(conn) == [(None, None)]

    # --- while a live process holds the slot, the next run's DuckDB step waits in Postgres'
    # queue (the pool is shared through the database); when the holder dies and is reaped,
    # the waiting step gets the slot and the run completes
    holder_proc = subprocess.Popen(["sleep", "120"])
    holder = run_holding_the_slot(holder_proc.pid)
    seen: dict = {}

    def watch() -> None:
        try:
            with connect() as c:  # a connection of its own: this runs beside the ingest
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    waiting = c.execute(
                        "SELECT run_id, step_key FROM pending_steps WHERE concurrency_key = %s AND run_id <> %s",
                        (POOL, holder.run_id),
                    ).fetchall()
                    if waiting:
                        time.sleep(1.0)  # still waiting a second later: blocked, not just queued
                        seen["waiting"] = waiting
                        seen["status"] = c.execute("SELECT status FROM runs WHERE run_id = %s", (waiting[0][0],)).fetchone()[0]
                        seen["slots"] = pool_slots(c)
                        break
                    time.sleep(0.1)
        finally:  # whatever was seen: the holder dies and is reaped, so the ingest can finish
            holder_proc.kill()
            holder_proc.wait()
            seen["reaped"] = runs.reap_dead_runs(runs.instance(get_settings()))

    watcher = threading.Thread(target=watch)
    watcher.start()
    r3 = ingest(f)
    watcher.join(100)
    assert r3.success, runs.failure_message(r3)
    assert seen.get("waiting") and {r for r, _ in seen["waiting"]} == {r3.run_id}, seen
    assert seen["status"] == "STARTED" and seen["slots"] == [(holder.run_id, "raw__bars_daily")], seen
    assert seen["reaped"] == [holder.run_id]
    assert (status(holder.run_id), status(r3.run_id)) == ("FAILURE", "SUCCESS")
    assert pool_slots(conn) == [(None, None)]
    assert not conn.execute("SELECT count(*) FROM pending_steps").fetchone()[0]

    # what the UI and `trading status` read: the same runs, through Dagster's API; each
    # successful load is followed by a short run publishing the serving snapshot
    all_runs = inst.get_runs()
    publishes = [r for r in all_runs if r.job_name == "publish_serving"]
    assert len(publishes) == 3 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in publishes)
    assert {r.run_id: r.status for r in all_runs if r.job_name != "publish_serving"} == {
        r1.run_id: dg.DagsterRunStatus.SUCCESS,
        zombie.run_id: dg.DagsterRunStatus.FAILURE,
        r2.run_id: dg.DagsterRunStatus.SUCCESS,
        holder.run_id: dg.DagsterRunStatus.FAILURE,
        r3.run_id: dg.DagsterRunStatus.SUCCESS,
    }
