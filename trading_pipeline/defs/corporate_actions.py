"""``raw/corporate_actions``: splits, dividends, symbol changes and delistings from a file
(``trading actions load PATH``), derived from a bar file's adjusted closes (``trading actions
derive FILE``) or fetched from Alpaca (``trading actions fetch``), checked whole and stored in
one transaction (trading_pipeline/marketdata/corporate_actions.py, actions_sources.py)."""

from datetime import date
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from trading_pipeline import logs
from trading_pipeline.defs.resources import WAREHOUSE_WRITERS, WarehouseResource
from trading_pipeline.marketdata import warehouse as wh

ACTIONS = dg.AssetKey(["raw", "corporate_actions"])


class ActionsConfig(dg.Config):
    """Where the actions come from: ``file`` (``path``: columns symbol,ex_date,kind plus ratio,
    amount, new_symbol, pay_date), ``adj_close`` (``path``: daily bars with an adjusted close) or
    ``alpaca`` (``symbols``, ``start``, ``end``: Alpaca's corporate actions API)."""

    source: Literal["file", "adj_close", "alpaca"] = "file"
    path: str = Field(default="", description="The actions file (file) or the bar file (adj_close).")
    symbols: list[str] = Field(default_factory=list, description="alpaca: the symbols to fetch.")
    start: str = Field(default="", description="alpaca: first ex-date (YYYY-MM-DD).")
    end: str = Field(default="", description="alpaca: last ex-date (YYYY-MM-DD).")
    tolerance: float = Field(default=1e-4, description="adj_close: how far close/adj_close may move and count as no action.")


@dg.asset(
    key=ACTIONS,
    pool=WAREHOUSE_WRITERS,
    group_name="raw",
    kinds={"duckdb"},
    description="Corporate actions (split, dividend, symbol_change, delisting) by symbol and ex-date, "
    "from files, adjusted closes or Alpaca; a batch with any problem is refused whole. Raw bars stay raw.",
)
def corporate_actions(context: dg.AssetExecutionContext, config: ActionsConfig, warehouse: WarehouseResource):
    from trading_pipeline.marketdata import actions_sources
    from trading_pipeline.marketdata.corporate_actions import ActionsError, load, load_frame

    notes: list[str] = []
    actions = None  # from a file: read and checked by load()
    try:
        if config.source == "adj_close":
            derived = actions_sources.derive_file(config.path, tolerance=config.tolerance)
            actions, notes, label = derived.actions, derived.notes, f"actions derived from {Path(config.path).name}"
        elif config.source == "alpaca":
            from trading_pipeline.settings import get_settings

            actions = actions_sources.fetch_alpaca(get_settings(), config.symbols, date.fromisoformat(config.start),
                                                   date.fromisoformat(config.end))
            label = "actions fetched from alpaca"
    except (actions_sources.ActionsSourceError, ValueError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    with wh.writer(warehouse.resolved_path()) as con:
        try:
            if actions is None:
                result = wh.transaction(con, lambda: load(con, config.path))
            else:
                source = actions["source"][0] if actions.height else config.source
                rows = actions_sources.as_rows(actions)
                result = wh.transaction(con, lambda: load_frame(con, rows, source, label))
        except ActionsError as exc:  # rolled back: nothing stored
            raise dg.Failure(description=str(exc), allow_retries=False,
                             metadata={"problems": dg.MetadataValue.json(exc.problems[:100])}) from None
    for w in result.warnings:
        context.log.warning(w)
    logs.run_event(context.log, "corporate_actions_loaded", source=config.source, **result.as_dict())
    return dg.MaterializeResult(metadata={
        "source": dg.MetadataValue.text(config.source),
        "loaded": dg.MetadataValue.int(result.loaded),
        "unchanged": dg.MetadataValue.int(result.unchanged),
        "warnings": dg.MetadataValue.json(result.warnings),
        "notes": dg.MetadataValue.json(notes[:200]),
        "actions": dg.MetadataValue.json([] if actions is None else [
            {k: (v.isoformat() if isinstance(v, date) else v) for k, v in a.items()}
            for a in actions.drop("warning", strict=False).head(500).to_dicts()]),
        **({"file": dg.MetadataValue.path(config.path)} if config.path else {}),
    })


load_actions_job = dg.define_asset_job(
    "load_corporate_actions", selection=dg.AssetSelection.assets(ACTIONS),
    # no default run config: the file path is required (the launchpad asks for it)
    description="Load corporate actions into raw.corporate_actions (a file, a bar file's adjusted closes, "
    "or Alpaca's corporate actions API).",
)
