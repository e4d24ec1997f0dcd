"""Resources shared by the asset modules, configured from TRADING_* settings."""


import dagster as dg

from trading_pipeline.settings import Settings, get_settings


class WarehouseResource(dg.ConfigurableResource):
    """Where the DuckDB warehouse lives. Empty means ``$TRADING_HOME/warehouse.duckdb``."""

    path: str = ""

    def resolved_path(self) -> str:
        return self.path or str(get_settings().warehouse_path)

    def settings(self) -> Settings:
        return get_settings()


def warehouse_resource() -> WarehouseResource:
    return WarehouseResource(path=dg.EnvVar("TRADING_WAREHOUSE").get_value("") or "")
