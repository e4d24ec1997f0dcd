"""Warehouse maintenance runs: compacting the lake (daily) and migrating an old warehouse into it.

Both write the warehouse, so both hold the writers' pool: a compaction never runs beside a
load, a dbt step or a publish. The domain logic is in ``marketdata/maintenance.py`` and
``marketdata/migrate.py``; the CLI (`trading warehouse compact|migrate`) launches these jobs.
"""

import dagster as dg

from trading_pipeline import logs
from trading_pipeline.defs.resources import WAREHOUSE_WRITERS, WarehouseResource
from trading_pipeline.defs.run_logs import run_logging, with_run_logging
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.settings import get_settings

POOL = WAREHOUSE_WRITERS
COMPACT_JOB = "lake_maintenance"
MIGRATE_JOB = "warehouse_migrate"


class CompactConfig(dg.Config):
    keep_snapshots_days: float | None = None  # default: TRADING_LAKE_SNAPSHOT_RETENTION_DAYS


@dg.op(
    name="compact_lake",
    pool=POOL,
    description="Flush inlined rows, rewrite and merge small files, expire snapshots past the retention "
    "(never a published one), delete the files nothing references.",
)
def compact_lake(context: dg.OpExecutionContext, config: CompactConfig, warehouse: WarehouseResource) -> dict:
    from trading_pipeline.marketdata import maintenance

    path = warehouse.resolved_path()
    if not wh.is_lake(path):
        logs.run_event(context.log, "lake_maintenance_skipped", warehouse=path,
                       reason=f"the warehouse is a {wh.describe(path)}, not a DuckLake")
        return {"skipped": f"the warehouse {path} is a {wh.describe(path)}, not a DuckLake"}
    if not wh.exists(path):
        logs.run_event(context.log, "lake_maintenance_skipped", warehouse=path, reason="no warehouse yet")
        return {"skipped": f"no warehouse at {path} yet"}
    days = config.keep_snapshots_days
    if days is None:
        days = get_settings().lake_snapshot_retention_days
    result = maintenance.compact(path, keep_snapshots_days=days)
    flat = _flat(result)
    logs.run_event(context.log, "lake_compacted", **flat)
    context.add_output_metadata({k: (dg.MetadataValue.int(v) if isinstance(v, int) else
                                     dg.MetadataValue.float(v) if isinstance(v, float) else dg.MetadataValue.text(str(v)))
                                 for k, v in flat.items() if v is not None})
    return result


@dg.job(name=COMPACT_JOB, description="Compact the DuckLake warehouse: few files, snapshots only as far back "
        "as TRADING_LAKE_SNAPSHOT_RETENTION_DAYS (and every one the serving layer still reads).",
        config=run_logging())
def lake_maintenance_job():
    compact_lake()


@dg.schedule(
    job=lake_maintenance_job,
    cron_schedule=get_settings().lake_maintenance_cron,
    execution_timezone="America/New_York",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily lake compaction (TRADING_LAKE_MAINTENANCE_CRON, New York time); a warehouse "
    "that is not a lake is left alone.",
)
def lake_maintenance_daily(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest(run_key=f"lake-maintenance-{context.scheduled_execution_time:%Y-%m-%d}",
                         run_config=with_run_logging())


class MigrateConfig(dg.Config):
    source_file: str = ""  # a DuckDB file (the layout before DuckLake)
    export_dir: str = ""  # or an EXPORT DATABASE ... (FORMAT parquet) folder of one


@dg.op(
    name="migrate_warehouse",
    pool=POOL,
    description="Copy an old DuckDB warehouse's raw, ops and backtest tables into the lake (one "
    "snapshot; the old file is only read).",
)
def migrate_warehouse(context: dg.OpExecutionContext, config: MigrateConfig, warehouse: WarehouseResource) -> dict:
    from pathlib import Path

    from trading_pipeline.marketdata import migrate

    result = migrate.migrate(
        warehouse.resolved_path(),
        source_file=Path(config.source_file) if config.source_file else None,
        export_dir=Path(config.export_dir) if config.export_dir else None,
    )
    logs.run_event(context.log, "warehouse_migrated", source=result["from"], kind=result["kind"],
                   rows_copied=result["rows_copied"], tables=len(result["tables"]),
                   snapshot_id=result["snapshot_id"])
    context.add_output_metadata({
        "from": dg.MetadataValue.text(result["from"]),
        "rows_copied": dg.MetadataValue.int(result["rows_copied"]),
        **{t: dg.MetadataValue.text(f"{v['source_rows']:,} in the old warehouse, {v['copied']:,} copied, "
                                    f"{v['lake_rows']:,} in the lake") for t, v in result["tables"].items()},
    })
    return result


@dg.job(name=MIGRATE_JOB, description="Copy a warehouse from before DuckLake into the lake "
        "(`trading warehouse migrate`).", config=run_logging())
def warehouse_migrate_job():
    migrate_warehouse()


def _flat(result: dict) -> dict:
    """``before``/``after`` figures as ``files_before``, ``files_after``...; the rest as is."""
    out = {k: v for k, v in result.items() if not isinstance(v, dict)}
    for when in ("before", "after"):
        for k, v in result.get(when, {}).items():
            out[f"{k}_{when}"] = v
    return out
