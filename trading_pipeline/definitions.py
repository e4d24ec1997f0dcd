"""The Dagster code location: everything under ``defs/``, plus shared resources and the
console logger every run uses (``defs/run_logs.py``: text or JSON per TRADING_LOG_FORMAT)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from trading_pipeline.defs.resources import warehouse_resource
from trading_pipeline.defs.run_logs import LOGGERS


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent / "defs"),
        dg.Definitions(resources={"warehouse": warehouse_resource()}, loggers=LOGGERS),
    )
