"""The Dagster code location: everything under ``defs/``, plus shared resources."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from trading_pipeline.defs.resources import warehouse_resource


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent / "defs"),
        dg.Definitions(resources={"warehouse": warehouse_resource()}),
    )
