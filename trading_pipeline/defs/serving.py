"""The serving snapshot the API reads (docs/decisions.md #1: the API never opens the warehouse)."""

import dagster as dg

from trading_pipeline import logs
from trading_pipeline.defs.resources import WAREHOUSE_WRITERS, WarehouseResource
from trading_pipeline.defs.run_logs import run_logging
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.settings import get_settings

POOL = WAREHOUSE_WRITERS
SNAPSHOT = dg.AssetKey(["serving", "snapshot"])


@dg.asset(
    key=SNAPSHOT,
    deps=[dg.AssetKey(["marts", n]) for n in
          ("signals", "indicators_daily", "indicators_intraday", "scan_results", "alerts", "dim_symbols")],
    pool=POOL,
    group_name="serving",
    kinds={"duckdb"},
    description="What the API and the CLI's readers serve, published after each scan: on the "
    "DuckLake warehouse a lake snapshot id (readers pin it; the change feed since the previous "
    "one becomes the WebSocket feed); on a DuckDB-file warehouse a copy replaced atomically.",
)
def serving_snapshot(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    from trading_pipeline.serving.publish import publish_snapshot_detailed

    settings = get_settings()
    with wh.writer(warehouse.resolved_path()) as con:
        result = publish_snapshot_detailed(warehouse.resolved_path(), settings.serving_dir, con=con)
    md = {k: v for k, v in vars(result).items() if isinstance(v, int | float | str)}
    logs.run_event(context.log, "snapshot_published", **md)
    metadata = {k: dg.MetadataValue.text(str(v)) for k, v in md.items()}
    if result.snapshot_id is not None:
        # what this run's readers see: `trading sql --as-of <run id>` reads the lake at it
        metadata["lake_snapshot_id"] = dg.MetadataValue.int(result.snapshot_id)
        metadata["lake_data_snapshot"] = dg.MetadataValue.int(result.data_snapshot or 0)
    return dg.MaterializeResult(metadata=metadata)


# Publishes the snapshot on its own: after a load or an orders run, which change the
# warehouse without building the marts (runs.run_job launches it), so the CLI's readers,
# which read only the snapshot, see the new bars and orders.
publish_serving_job = dg.define_asset_job(
    "publish_serving",
    selection=dg.AssetSelection.assets(SNAPSHOT),
    description="Publish the serving snapshot (what the API and the CLI's readers read).",
    config=run_logging(),
)
