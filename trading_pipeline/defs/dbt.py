"""dbt models as Dagster assets (dagster-dbt): lineage from raw bars, dbt tests as checks.

Every indicator and signal is defined in ``dbt_project/`` and nowhere else; this module
only runs ``dbt build`` with the scan rules from rules.yaml passed as ``--vars``.
"""

import json
from pathlib import Path

import dagster as dg
from dagster._utils import run_with_concurrent_update_guard
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from dagster_dbt.dbt_project import using_dagster_dev

from trading_pipeline import logs
from trading_pipeline.defs.resources import WAREHOUSE_WRITERS, WarehouseResource
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.marketdata.retry import LockWait
from trading_pipeline.scans.dbt_runner import (
    dbt_executable,
    dbt_target,
    prepare_warehouse,
    vars_json,
    warehouse_for_dbt,
)
from trading_pipeline.settings import DBT_PROJECT_DIR, get_settings

POOL = WAREHOUSE_WRITERS

DBT_PROJECT = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
MANIFEST = DBT_PROJECT.manifest_path


def _newest_source_mtime() -> float:
    files = [p for p in DBT_PROJECT_DIR.rglob("*") if p.suffix in {".sql", ".py", ".yml", ".yaml"}
             and "target" not in p.parts and "logs" not in p.parts]
    return max(p.stat().st_mtime for p in files)


def _manifest_is_current() -> bool:
    return MANIFEST.exists() and MANIFEST.stat().st_mtime >= _newest_source_mtime()


def _parse(project: DbtProject) -> None:
    """``dbt parse`` into the project's target: dagster-dbt's own preparation, with the dbt our
    builds use (``dbt_executable``, which need not be on PATH: ``.venv/bin/trading``) and the
    warehouse named as a dbt var (profiles.yml reads ``var('warehouse')``) instead of through
    the process environment. ``dbt parse`` never opens it, so the default file is named: the
    manifest is the same whatever ``TRADING_WAREHOUSE`` is."""
    args = ["parse", "--quiet", "--vars", json.dumps({"warehouse": str(get_settings().home / "warehouse.duckdb")})]
    DbtCliResource(project_dir=project, dbt_executable=dbt_executable()).cli(args, target_path=project.target_path).wait()


def prepare_manifest() -> Path:
    """The manifest ``@dbt_assets`` is built from (``DbtProject.manifest_path``).

    As dagster-dbt's preparer does: under ``dagster dev`` parse at every load; elsewhere
    dagster-dbt expects a manifest built at deploy time, but tests (``materialize``), the
    ``trading`` CLI (jobs in-process, runs.py) and a fresh clone have none, or one older than
    the models, so parse then too. Under dagster's file guard: a process that finds another
    one's fresh manifest skips its own parse.
    """
    if using_dagster_dev() or not _manifest_is_current():
        run_with_concurrent_update_guard(MANIFEST, _parse, project=DBT_PROJECT)
    return MANIFEST


class TradingDbtTranslator(DagsterDbtTranslator):
    """Asset keys as schema/name (``marts/signals``), matching the warehouse's names."""

    def get_asset_key(self, dbt_resource_props):
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey([dbt_resource_props["source_name"], dbt_resource_props["name"]])
        schema = dbt_resource_props.get("config", {}).get("schema") or "main"
        return dg.AssetKey([schema, dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props):
        if dbt_resource_props["resource_type"] == "source":
            return "bars"
        return "scans"


@dbt_assets(
    manifest=prepare_manifest(),
    project=DBT_PROJECT,
    dagster_dbt_translator=TradingDbtTranslator(),
    pool=POOL,
    name="dbt_models",
)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource):
    """``dbt build`` (models + tests) on the warehouse with the current rules.yaml."""
    # the warehouse travels as a dbt var on the command line (profiles.yml reads it), never
    # through this process's environment (dagster-dbt hands the child a copy of it)
    yield from _build_waiting_for_lock(context, dbt, warehouse.resolved_path())


def _build_waiting_for_lock(context, dbt: DbtCliResource, path: str):
    """``dbt build``, retried while another process holds the warehouse's file lock.

    dbt opens the warehouse in its own process and fails at once on DuckDB's lock (a
    reader holding the file open); it fails before any model, so nothing was built and
    the build is started again (retry.LockWait), up to ``TRADING_LOCK_WAIT_SECONDS`` in all.
    """
    settings = get_settings()
    waiting = LockWait(settings.lock_wait_seconds, max_delay=1.0)
    args = ["build", "--vars", vars_json(settings.rules_file, warehouse=warehouse_for_dbt(path)),
            "--target", dbt_target(path)]
    prepare_warehouse(path)
    while True:
        wh.wait_writable(path, waiting.deadline)
        invocation = dbt.cli(args, context=context, raise_on_error=False)
        emitted = False
        for event in invocation.stream():
            emitted = True
            yield event
        if invocation.is_successful():
            return
        error = invocation.get_error()
        if error is None:
            return
        if emitted or not waiting.retry(error):
            raise error
        logs.run_event(context.log, "dbt_lock_retry", level="warning", attempt=waiting.attempts,
                       reason="the warehouse is locked by another process; retrying")


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=DBT_PROJECT, dbt_executable=dbt_executable())


defs = dg.Definitions(assets=[dbt_models], resources={"dbt": dbt_resource()})


SCAN_SELECTION = dg.AssetSelection.assets(["raw", "bars_daily"]).downstream() - dg.AssetSelection.assets(["raw", "bars_intraday"]).downstream()
