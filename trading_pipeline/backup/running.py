"""Whether a home is running, concretely: Dagster runs in flight in its instance, or another
process on this host holding its ops store or lake catalog open; and stopping its writers."""

from __future__ import annotations

import os
import time
from pathlib import Path

from trading_pipeline.backup.manifest import Refused, Step, noop
from trading_pipeline.backup.ops_store import ops_kind, sqlite_file
from trading_pipeline.settings import Settings


def in_flight_runs(settings: Settings) -> list[str]:
    """Dagster runs of this home's instance that are queued or running (a run whose process on
    this host is gone is dead, not running: run_state.dead_reason)."""
    if not (settings.dagster_home / "dagster.yaml").exists() and not (settings.dagster_home / "history").exists():
        return []
    import dagster as dg

    from trading_pipeline import runs
    from trading_pipeline.run_state import dead_reason

    inst = runs.instance(settings)
    live = inst.get_runs(filters=dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]))
    return [f"Dagster run {r.run_id[:8]} ({r.job_name}) is {r.status.value}" for r in live
            if not dead_reason(r.status.value, dict(r.tags))]


def home_files(settings: Settings) -> list[Path]:
    """The SQLite files (and their WALs) a writer of this home holds open: ops store, lake catalog."""
    files = []
    if ops_kind(settings.ops_store_url) == "sqlite":
        files.append(sqlite_file(settings.ops_store_url))
    from trading_pipeline.marketdata import warehouse as wh

    if wh.is_lake(settings.warehouse_path) and wh.lake(settings.warehouse_path).catalog_file is not None:
        files.append(wh.lake(settings.warehouse_path).catalog_file)
    return [Path(f"{f}{suffix}").resolve() for f in files for suffix in ("", "-wal")]


def open_by_others(settings: Settings) -> list[str]:
    """Processes on this host (other than this one) holding the ops store's or the lake
    catalog's SQLite file open: the API holds the store after its first request, a writer holds
    the catalog. Read from /proc (Linux); elsewhere, nothing is found."""
    targets = {str(p) for p in home_files(settings)}
    found: dict[int, str] = {}
    proc = Path("/proc")
    if not targets or not proc.is_dir():
        return []
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                link = os.readlink(fd)
                if link in targets:
                    cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                    found[int(pid_dir.name)] = f"process {pid_dir.name} ({cmd[:80]}) has {Path(link).name} open"
                    break
        except OSError:  # gone, or not ours to read
            continue
    return list(found.values())


def running(settings: Settings) -> list[str]:
    """Why the home counts as running (empty: it does not): runs in flight in its Dagster
    instance, or another process holding its ops store or lake catalog open."""
    return in_flight_runs(settings) + open_by_others(settings)


def stop_writers(settings: Settings, wait: float, step: Step = noop) -> list[str]:
    """``--force``: engage the kill switch (no order leaves, from the API or a run), then wait up to
    ``wait`` seconds for in-flight runs to end. Runs are never killed (a killed order run may have
    sent an order it has not recorded); still running at the deadline: :class:`Refused`."""
    from trading_pipeline.trading.store import OpsStore

    if ops_kind(settings.ops_store_url) != "sqlite" or sqlite_file(settings.ops_store_url).exists():
        store = OpsStore.from_settings(settings)
        try:
            store.set_kill_switch(True, "restore from backup in progress", "trading backup restore --force")
        finally:
            store.close()
        step("kill switch engaged")
    deadline = time.monotonic() + wait
    while True:
        busy = in_flight_runs(settings)
        if not busy:
            return open_by_others(settings)
        if time.monotonic() >= deadline:
            raise Refused(f"runs still in flight after {wait:g} s: {'; '.join(busy)}",
                          "the kill switch is ON: let them finish (or terminate them in the Dagster UI), then run "
                          "the restore again")
        step(f"waiting for {len(busy)} run(s) to finish")
        time.sleep(1)
