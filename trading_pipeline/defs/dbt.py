"""dbt models as Dagster assets (dagster-dbt): lineage from raw bars, dbt tests as checks.

Every indicator and signal is defined in ``dbt_project/`` and nowhere else; this module
only runs ``dbt build`` with the scan rules from rules.yaml passed as ``--vars``.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from trading_pipeline.defs.resources import WAREHOUSE_WRITERS, WarehouseResource
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.marketdata.retry import LockWait
from trading_pipeline.scans.dbt_runner import dbt_executable, vars_json, warehouse_for_dbt
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


@contextmanager
def _parse_env() -> Iterator[None]:
    """The environment dagster-dbt's preparer runs ``dbt parse`` in (it takes ``os.environ``).

    Its ``DbtCliResource`` looks ``dbt`` up on PATH, which need not hold the project's .venv
    (``.venv/bin/trading``, ``.venv/bin/python -m pytest``): put the folder of the dbt our
    builds use (``dbt_executable``) first. And
    ``dbt parse`` never opens the warehouse, so name the default file: the manifest stays the
    same whatever ``TRADING_WAREHOUSE`` is, and a location dbt cannot build into (``:memory:``)
    fails the build, not the code location.
    """
    saved = {k: os.environ.get(k) for k in ("PATH", "TRADING_WAREHOUSE")}
    os.environ["PATH"] = os.pathsep.join([str(Path(dbt_executable()).parent), saved["PATH"] or ""])
    os.environ["TRADING_WAREHOUSE"] = str(get_settings().home / "warehouse.duckdb")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def prepare_manifest() -> Path:
    """The manifest ``@dbt_assets`` is built from, prepared by dagster-dbt (``DbtProject``).

    Under ``dagster dev``, ``prepare_if_dev`` parses at every load. Elsewhere it does nothing
    (dagster-dbt expects a manifest built at deploy time), but tests (``materialize``), the
    ``trading`` CLI (jobs in-process, runs.py) and a fresh clone have none, or one older
    than the models: then the project's preparer is called explicitly. It runs ``dbt parse``
    under a file lock, and skips the parse when another process finished one meanwhile.
    """
    with _parse_env():
        DBT_PROJECT.prepare_if_dev()
        if not _manifest_is_current():
            DBT_PROJECT.preparer.prepare(DBT_PROJECT)
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
    # the dbt process reads the warehouse path from its environment; set it for this build
    # only, so nothing leaks into later runs in the same process (the CLI, tests)
    saved = {k: os.environ.get(k) for k in ("TRADING_WAREHOUSE", "DBT_SEND_ANONYMOUS_USAGE_STATS")}
    os.environ["TRADING_WAREHOUSE"] = warehouse_for_dbt(warehouse.resolved_path())
    os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    try:
        yield from _build_waiting_for_lock(context, dbt, warehouse.resolved_path())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _build_waiting_for_lock(context, dbt: DbtCliResource, path: str):
    """``dbt build``, retried while another process holds the warehouse's file lock.

    dbt opens the warehouse in its own process and fails at once on DuckDB's lock (a
    reader holding the file open); it fails before any model, so nothing was built and
    the build is started again (retry.LockWait), up to ``TRADING_LOCK_WAIT_SECONDS`` in all.
    """
    settings = get_settings()
    waiting = LockWait(settings.lock_wait_seconds, max_delay=1.0)
    args = ["build", "--vars", vars_json(settings.rules_file)]
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
        context.log.warning(f"event=dbt_lock_retry attempt={waiting.attempts}: the warehouse is "
                            "locked by another process; retrying")


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=DBT_PROJECT, dbt_executable=dbt_executable())


defs = dg.Definitions(assets=[dbt_models], resources={"dbt": dbt_resource()})


SCAN_SELECTION = dg.AssetSelection.assets(["raw", "bars_daily"]).downstream() - dg.AssetSelection.assets(["raw", "bars_intraday"]).downstream()
