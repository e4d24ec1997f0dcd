"""The Dagster code location: everything under ``defs/``, plus shared resources."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from trading_pipeline.defs.resources import warehouse_resource


def _loggers() -> dict:
    """Dagster's JSON console logger when TRADING_LOG_FORMAT=json (run_id on every line)."""
    from trading_pipeline.settings import get_settings

    return {"console": dg.json_console_logger} if get_settings().log_format == "json" else {}


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent / "defs"),
        dg.Definitions(resources={"warehouse": warehouse_resource()}, loggers=_loggers()),
    )
