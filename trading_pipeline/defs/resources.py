"""Resources shared by the asset modules, configured from TRADING_* settings."""


from pathlib import Path

import dagster as dg

from trading_pipeline.marketdata.warehouse import location
from trading_pipeline.settings import Settings, get_settings

# The Dagster concurrency pool every warehouse writer holds (one writer at a time; dagster.yaml
# sets its limit to 1): bar loads, dbt, publish, orders, backtests, freshness.
WAREHOUSE_WRITERS = "duckdb_writer"


class WarehouseResource(dg.ConfigurableResource):
    """Where the DuckDB warehouse lives. Empty means the ``warehouse`` setting
    (``TRADING_WAREHOUSE``, else ``$TRADING_HOME/warehouse.duckdb``).

    Not dagster-duckdb's ``DuckDBResource`` (the dependency was dropped, issue 18): its
    ``get_connection`` only opens read-write, retries any IOException ten times without jitter
    rather than only the lock error up to ``TRADING_LOCK_WAIT_SECONDS``, and neither says what
    an ``md:``/``ducklake:`` location needs when it fails nor serves dbt, which opens the file
    in its own process; ``warehouse.connect`` and ``dbt_runner`` do all that, so this resource
    only names the location they open."""

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
