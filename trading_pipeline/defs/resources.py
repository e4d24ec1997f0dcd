"""Resources shared by the asset modules, configured from TRADING_* settings."""


from pathlib import Path

import dagster as dg

from trading_pipeline.marketdata.warehouse import location
from trading_pipeline.settings import Settings, get_settings


class WarehouseResource(dg.ConfigurableResource):
    """Where the DuckDB warehouse lives. Empty means the ``warehouse`` setting
    (``TRADING_WAREHOUSE``, else ``$TRADING_HOME/warehouse.duckdb``)."""

    path: str = ""

    def resolved_path(self) -> str:
        """The location to open: a file as an absolute path, ``md:``/``ducklake:`` unchanged."""
        if not self.path:
            return str(get_settings().warehouse_path)
        loc = location(self.path)
        return str(loc.expanduser().resolve()) if isinstance(loc, Path) else loc

    def settings(self) -> Settings:
        return get_settings()


def warehouse_resource() -> WarehouseResource:
    return WarehouseResource(path=dg.EnvVar("TRADING_WAREHOUSE").get_value("") or "")
