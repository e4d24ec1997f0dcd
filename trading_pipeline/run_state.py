"""What `trading status` says about runs, checks and the freshness of the marts, answered fast.

Importing Dagster and loading the definitions (the dbt manifest) takes seconds, so with the
default embedded storage (SQLite files under DAGSTER_HOME) the answers are read from those
files directly, read-only; with any other storage (Postgres, ``TRADING_DAGSTER_YAML``) they
come through the Dagster instance API. ``tests/pipeline/test_cli_readers.py`` checks that
both ways give the same answers.

* the last run, and whether it is **dead**: a run still STARTED/STARTING whose process
  (the ``trading/pid`` tag this host's CLI sets, ``runs.run_job``) is gone (``kill -9``,
  OOM). The next run marks it failed (``runs.reap_dead_runs``); until then status says so.
* failed checks: checks whose latest result failed.
* marts out of date: ``intermediate/int_indicators`` materialized after ``marts/signals``
  (a scan killed mid-dbt), or the marts newer than the published snapshot.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
from pathlib import Path

from trading_pipeline.settings import Settings

PID_TAG, HOST_TAG = "trading/pid", "trading/host"
INDICATORS, SIGNALS, SNAPSHOT = "intermediate/int_indicators", "marts/signals", "serving/snapshot"
LIVE = ("STARTED", "STARTING", "QUEUED", "NOT_STARTED")


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_reason(status: str, tags: dict[str, str]) -> str | None:
    """Why a run that says it is running is not (its process on this host is gone), or None."""
    if status not in ("NOT_STARTED", "STARTING", "STARTED"):  # an in-process run may die before it starts
        return None
    pid = int(tags.get(PID_TAG, "0") or 0)
    if not pid or tags.get(HOST_TAG) != socket.gethostname() or pid == os.getpid() or alive(pid):
        return None
    return f"process {pid} is gone (killed?); the next run marks it failed"


def _sqlite_files(settings: Settings) -> tuple[Path, Path] | None:
    """(runs.db, index.db) when the instance uses the default SQLite storage, else None."""
    home = settings.dagster_home
    cfg = home / "dagster.yaml"
    try:
        text = cfg.read_text() if cfg.exists() else settings.dagster_yaml.read_text()
    except OSError:
        text = ""
    # run/event storage configured (Postgres...): use the API
    if re.search(r"^(storage|run_storage|event_log_storage|schedule_storage)\s*:", text, re.MULTILINE):
        return None
    runs_db, index_db = home / "history" / "runs.db", home / "history" / "runs" / "index.db"
    return (runs_db, index_db) if runs_db.exists() else None


def _ro(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    return con


def _key(asset_key_json: str) -> str:
    try:
        return "/".join(json.loads(asset_key_json))
    except (ValueError, TypeError):
        return str(asset_key_json)


def read_state(settings: Settings) -> dict:
    """{"last_run": {...} | None, "failed_checks": [...], "materialized": {asset: timestamp}}."""
    files = _sqlite_files(settings)
    if files is not None:
        try:
            return _read_sqlite(*files)
        except sqlite3.Error:
            pass  # a schema this reader does not know: ask Dagster
    return _read_api(settings)


def _read_sqlite(runs_db: Path, index_db: Path) -> dict:
    out: dict = {"last_run": None, "failed_checks": [], "materialized": {}}
    con = _ro(runs_db)
    try:
        row = con.execute(
            "SELECT run_id, pipeline_name, status, start_time, end_time FROM runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row:
            tags = dict(con.execute("SELECT key, value FROM run_tags WHERE run_id = ?", (row[0],)).fetchall())
            out["last_run"] = _run(row[0], row[1], row[2], row[3], row[4], tags)
    finally:
        con.close()
    if not index_db.exists():
        return out
    con = _ro(index_db)
    try:
        latest = con.execute(
            """SELECT asset_key, check_name, execution_status FROM asset_check_executions
               WHERE id IN (SELECT max(id) FROM asset_check_executions
                            GROUP BY asset_key, check_name)"""
        ).fetchall()
        # from the materialization events themselves: asset_keys' last_materialization_timestamp
        # also moves on ASSET_MATERIALIZATION_PLANNED (a run that planned, then died)
        keys = [json.dumps(name.split("/")) for name in (INDICATORS, SIGNALS, SNAPSHOT)]
        for k in keys:
            row = con.execute(
                """SELECT timestamp FROM event_logs WHERE asset_key = ? AND dagster_event_type = 'ASSET_MATERIALIZATION'
                   ORDER BY id DESC LIMIT 1""", (k,)).fetchone()
            if row and row[0] is not None:
                out["materialized"][_key(k)] = _epoch(row[0])
    finally:
        con.close()
    out["failed_checks"] = _failed(latest)
    return out


def _epoch(ts) -> float:
    from datetime import UTC, datetime

    if isinstance(ts, int | float):
        return float(ts)
    return datetime.fromisoformat(str(ts)).replace(tzinfo=UTC).timestamp()


def _failed(latest: list[tuple]) -> list[str]:
    """Checks whose latest result failed, from (asset, check, status) of each check's latest
    execution (a home from before the bar checks lost their session partitions has older
    per-session rows too: the latest result of all is the one that counts)."""
    return sorted({f"{_key(asset)}:{check}" for asset, check, status in latest if status == "FAILED"})


def _run(run_id: str, job: str, status: str, start: float | None, end: float | None, tags: dict) -> dict:
    run = {"run_id": run_id, "job": job, "status": status, "start_time": start, "end_time": end}
    dead = dead_reason(status, tags)
    if dead:
        run["dead"] = dead
    return run


def _read_api(settings: Settings) -> dict:
    import dagster as dg

    from trading_pipeline import runs
    inst = runs.instance(settings)
    out: dict = {"last_run": None, "failed_checks": [], "materialized": {}}
    last = inst.get_runs(limit=1)
    if last:
        r = last[0]
        stats = inst.get_run_stats(r.run_id)
        out["last_run"] = _run(r.run_id, r.job_name, r.status.value, stats.start_time, stats.end_time, dict(r.tags))
    latest = []
    for checks_def in runs.definitions().asset_checks or []:
        for spec in checks_def.check_specs:
            for rec in inst.event_log_storage.get_asset_check_execution_history(spec.key, limit=1):
                latest.append((json.dumps(list(spec.asset_key.path)), spec.name, rec.status.value))
    out["failed_checks"] = _failed(latest)
    for name in (INDICATORS, SIGNALS, SNAPSHOT):
        ev = inst.get_latest_materialization_event(dg.AssetKey(name.split("/")))
        if ev is not None:
            out["materialized"][name] = ev.timestamp
    return out


def warnings_for(state: dict) -> list[str]:
    """What a person must act on: a dead run, marts older than the indicators or than the
    published snapshot's inputs."""
    out = []
    lr = state.get("last_run") or {}
    if lr.get("dead"):
        out.append(f"run {lr['run_id'][:8]} ({lr['job']}) is dead: {lr['dead']}")
    m = state.get("materialized", {})
    if INDICATORS in m and SIGNALS in m and m[INDICATORS] > m[SIGNALS]:
        out.append("marts out of date with indicators (a scan stopped mid-dbt): re-run `trading scan`")
    elif SIGNALS in m and SNAPSHOT in m and m[SIGNALS] > m[SNAPSHOT]:
        out.append("the published snapshot is older than the marts (a scan stopped before publishing): "
                   "re-run `trading scan`")
    return out
