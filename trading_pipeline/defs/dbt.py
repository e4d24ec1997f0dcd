"""dbt models as Dagster assets (dagster-dbt): lineage from raw bars, dbt tests as checks.

Every indicator and signal is defined in ``dbt_project/`` and nowhere else; this module
only runs ``dbt build`` with the scan rules from rules.yaml passed as ``--vars``.
"""

import fcntl
import os
import subprocess
import time
from pathlib import Path

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from trading_pipeline.defs.resources import WarehouseResource
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.scans.dbt_runner import dbt_env, dbt_executable, vars_json, warehouse_for_dbt
from trading_pipeline.settings import DBT_PROJECT_DIR, get_settings

POOL = "duckdb_writer"
MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"


def _newest_source_mtime() -> float:
    files = [p for p in DBT_PROJECT_DIR.rglob("*") if p.suffix in {".sql", ".py", ".yml", ".yaml"}
             and "target" not in p.parts and "logs" not in p.parts]
    return max(p.stat().st_mtime for p in files)


def ensure_manifest() -> Path:
    """Run ``dbt parse`` when the manifest is missing or older than the project files.

    A file lock keeps concurrent processes (tests, `dagster dev` workers) from parsing at once.
    """
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    with open(MANIFEST.parent / ".parse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if MANIFEST.exists() and MANIFEST.stat().st_mtime >= _newest_source_mtime():
            return MANIFEST
        # dbt parse never opens the warehouse: name the default file, so a location dbt
        # cannot build into (TRADING_WAREHOUSE=:memory:) fails the build, not the code location
        env = dbt_env(get_settings().home / "warehouse.duckdb")
        subprocess.run(
            [dbt_executable(), "parse", "--project-dir", str(DBT_PROJECT_DIR),
             "--profiles-dir", str(DBT_PROJECT_DIR), "--quiet"],
            env=env, check=True, cwd=DBT_PROJECT_DIR, capture_output=True, text=True,
        )
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
    manifest=ensure_manifest(),
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
    the build is started again, up to ``TRADING_LOCK_WAIT_SECONDS`` in all.
    """
    settings = get_settings()
    deadline = time.monotonic() + settings.lock_wait_seconds
    args = ["build", "--vars", vars_json(settings.rules_file)]
    attempt = 0
    while True:
        attempt += 1
        wh.wait_writable(path, deadline)
        invocation = dbt.cli(args, context=context, raise_on_error=False)
        emitted = False
        for event in invocation.stream():
            emitted = True
            yield event
        if invocation.is_successful():
            return
        error = invocation.get_error()
        if not emitted and error is not None and wh.is_lock_error(error) and time.monotonic() < deadline:
            context.log.warning(f"event=dbt_lock_retry attempt={attempt}: the warehouse is locked by "
                                "another process; retrying")
            time.sleep(1.0)
            continue
        if error is not None:
            raise error
        return


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(
        project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR),
        dbt_executable=dbt_executable(),
    )


defs = dg.Definitions(assets=[dbt_models], resources={"dbt": dbt_resource()})


SCAN_SELECTION = dg.AssetSelection.assets(["raw", "bars_daily"]).downstream() - dg.AssetSelection.assets(["raw", "bars_intraday"]).downstream()
