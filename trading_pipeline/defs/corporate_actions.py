"""``raw/corporate_actions``: splits, dividends, symbol changes and delistings from a file
(``trading actions load PATH``), checked whole and stored in one transaction
(trading_pipeline/marketdata/corporate_actions.py)."""

import dagster as dg

from trading_pipeline import logs
from trading_pipeline.defs.resources import WAREHOUSE_WRITERS, WarehouseResource
from trading_pipeline.marketdata import warehouse as wh

ACTIONS = dg.AssetKey(["raw", "corporate_actions"])


class ActionsConfig(dg.Config):
    """The actions file to load: columns symbol,ex_date,kind plus ratio, amount, new_symbol, pay_date."""

    path: str


@dg.asset(
    key=ACTIONS,
    pool=WAREHOUSE_WRITERS,
    group_name="raw",
    kinds={"duckdb"},
    description="Corporate actions (split, dividend, symbol_change, delisting) by symbol and ex-date, "
    "loaded from files; a file with any problem is refused whole. Raw bars stay raw.",
)
def corporate_actions(context: dg.AssetExecutionContext, config: ActionsConfig, warehouse: WarehouseResource):
    from trading_pipeline.marketdata.corporate_actions import ActionsError, load

    with wh.writer(warehouse.resolved_path()) as con:
        try:
            result = wh.transaction(con, lambda: load(con, config.path))
        except ActionsError as exc:  # rolled back: nothing stored
            raise dg.Failure(description=str(exc), allow_retries=False,
                             metadata={"problems": dg.MetadataValue.json(exc.problems[:100])}) from None
    for w in result.warnings:
        context.log.warning(w)
    logs.run_event(context.log, "corporate_actions_loaded", **result.as_dict())
    return dg.MaterializeResult(metadata={
        "loaded": dg.MetadataValue.int(result.loaded),
        "unchanged": dg.MetadataValue.int(result.unchanged),
        "warnings": dg.MetadataValue.json(result.warnings),
        "file": dg.MetadataValue.path(config.path),
    })


load_actions_job = dg.define_asset_job(
    "load_corporate_actions", selection=dg.AssetSelection.assets(ACTIONS),
    # no default run config: the file path is required (the launchpad asks for it)
    description="Load a corporate actions file into raw.corporate_actions.",
)
