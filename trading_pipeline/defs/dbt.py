"""dbt models as Dagster assets (dagster-dbt): lineage from raw bars, dbt tests as checks.

Every indicator and signal is defined in ``dbt_project/`` and nowhere else; this module
only runs ``dbt build`` with the scan rules from rules.yaml passed as ``--vars``.
"""

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import uuid
from functools import cached_property
from pathlib import Path

import dagster as dg
from dagster._utils import run_with_concurrent_update_guard
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from dagster_dbt.dbt_project import using_dagster_dev
from packaging import version
from pydantic import Field

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
    """The newest model, macro, test or project file (never walking target/ or logs/)."""
    mtimes = []
    for dirpath, dirnames, filenames in os.walk(DBT_PROJECT_DIR):
        dirnames[:] = [d for d in dirnames if d not in {"target", "logs", "dbt_packages"}]
        mtimes += [os.stat(os.path.join(dirpath, f)).st_mtime for f in filenames
                   if f.endswith((".sql", ".py", ".yml", ".yaml"))]
    return max(mtimes)


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


class DbtBuildConfig(dg.Config):
    """Run config of ``dbt_models`` (``ops: {dbt_models: {config: {full_tests: true}}}``)."""

    full_tests: bool = Field(
        default=False,
        description="Run every data test over all rows. Default: an incremental build tests only "
        "the rows it changed (new keys against the whole table for uniqueness); a first build "
        "or --full-refresh tests everything anyway (dbt_project/macros/test_scope.sql).",
    )


@dbt_assets(
    manifest=prepare_manifest(),
    project=DBT_PROJECT,
    dagster_dbt_translator=TradingDbtTranslator(),
    pool=POOL,
    name="dbt_models",
)
def dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource,
    config: DbtBuildConfig,
):
    """``dbt build`` (models + tests) on the warehouse with the current rules.yaml; the data
    tests check the rows this build changed unless ``full_tests``."""
    # the warehouse travels as a dbt var on the command line (profiles.yml reads it), never
    # through this process's environment (dagster-dbt hands the child a copy of it)
    yield from _build_waiting_for_lock(context, dbt, warehouse.resolved_path(), config.full_tests)


def _build_waiting_for_lock(context, dbt: DbtCliResource, path: str, full_tests: bool = False):
    """``dbt build``, retried while another process holds the warehouse's file lock.

    dbt opens the warehouse in its own process and fails at once on DuckDB's lock (a
    reader holding the file open); it fails before any model, so nothing was built and
    the build is started again (retry.LockWait), up to ``TRADING_LOCK_WAIT_SECONDS`` in all.
    """
    settings = get_settings()
    waiting = LockWait(settings.lock_wait_seconds, max_delay=1.0)
    args = ["build", "--vars", vars_json(settings.rules_file, warehouse=warehouse_for_dbt(path), full_tests=full_tests),
            "--target", dbt_target(path)]
    prepare_warehouse(path)
    cache = _parse_cache(args)
    while True:
        wh.wait_writable(path, waiting.deadline)
        target = _run_target(context.run_id, cache)
        invocation = dbt.cli(args, context=context, raise_on_error=False, target_path=target)
        emitted = False
        for event in invocation.stream():
            emitted = True
            yield event
        if invocation.is_successful():
            _keep(target / PARSE_FILE, cache)
            return
        error = invocation.get_error()
        if error is None:
            return
        if emitted or not waiting.retry(error):
            raise error
        logs.run_event(context.log, "dbt_lock_retry", level="warning", attempt=waiting.attempts,
                       reason="the warehouse is locked by another process; retrying")


PARSE_FILE = "partial_parse.msgpack"
PARSE_CACHE = DBT_PROJECT.project_dir / DBT_PROJECT.target_path / "parse_cache"


def _parse_cache(args: list[str]) -> Path:
    """Where the parse of a build with these arguments is kept for the next one.

    dbt re-parses the whole project (seconds) unless the ``partial_parse.msgpack`` it finds
    was made with the same vars, profile and target; ours carry the warehouse and the rules,
    so each home (and rules file) keeps its own. dbt still re-reads any model that changed.
    """
    return PARSE_CACHE / (hashlib.sha256(json.dumps(args).encode()).hexdigest()[:20] + ".msgpack")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed by another run's clean-up meanwhile
        return 0.0


KEEP_RUN_TARGETS = 20  # dbt's artifacts (run_results.json, dbt.log) of the last builds


def _run_target(run_id: str, cache: Path) -> Path:
    """A fresh target folder for one dbt invocation, seeded with the kept parse; the oldest
    ones beyond the last ``KEEP_RUN_TARGETS`` are removed (each holds a compiled project and
    a manifest: without this the target grew by ~3 MB per scan, forever)."""
    root = DBT_PROJECT.project_dir / DBT_PROJECT.target_path
    target = root / f"dbt_models-{run_id[:7]}-{uuid.uuid4().hex[:7]}"
    target.mkdir(parents=True)
    old = sorted(root.glob("dbt_models-*"), key=_mtime)
    for stale in old[:-KEEP_RUN_TARGETS]:
        shutil.rmtree(stale, ignore_errors=True)
    if cache.exists():
        with contextlib.suppress(OSError):  # removed meanwhile: dbt parses in full
            shutil.copyfile(cache, target / PARSE_FILE)
    return target


def _keep(made: Path, cache: Path) -> None:
    """Keep a successful build's parse (replaced atomically: another run may be reading it)."""
    if not made.exists():
        return
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made, tmp)
        os.replace(tmp, cache)
    except OSError:  # a read-only project: the next build parses in full, as before
        tmp.unlink(missing_ok=True)


class TradingDbtCliResource(DbtCliResource):
    """dagster-dbt's resource without two start-up costs our builds never use (4.7 s of a
    13.9 s scan step on this machine, before dbt even started):

    * the dbt version, which it asks ``dbt --version`` for (a second dbt process, ~2 s):
      the dbt we run is the dbt-core installed beside us (``dbt_executable``), so its
      version is that package's;
    * an in-process dbt adapter (loading dbt, the profile and every macro, ~3 s), used only
      to fetch column schemas or row counts after a build, which we do not ask for.
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        if Path(self.dbt_executable).parent == Path(sys.executable).parent:
            return version.parse(importlib.metadata.version("dbt-core"))
        return super()._cli_version

    def _initialize_dbt_core_adapter(self, args):  # noqa: ARG002 - dagster-dbt's signature
        return None


def dbt_resource() -> DbtCliResource:
    return TradingDbtCliResource(project_dir=DBT_PROJECT, dbt_executable=dbt_executable())


defs = dg.Definitions(assets=[dbt_models], resources={"dbt": dbt_resource()})


SCAN_SELECTION = dg.AssetSelection.assets(["raw", "bars_daily"]).downstream() - dg.AssetSelection.assets(["raw", "bars_intraday"]).downstream()
