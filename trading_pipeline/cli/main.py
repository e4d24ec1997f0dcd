"""`trading`: status, ingest, scans, backtests, portfolio, orders, rules and SQL.

Every command that changes the warehouse starts a real Dagster run (recorded in the
instance under TRADING_HOME, visible in `make up`); reading commands open the warehouse
read-only. `--json` gives machine-readable output everywhere.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="trading",
    help="Market-data and trading pipeline: Dagster + DuckDB + dbt. State lives in TRADING_HOME "
    "(default ./.trading).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _register_commands() -> None:
    from trading_api.cli import register as register_api
    from trading_pipeline.cli import (
        accounts_cmd,
        actions_cmd,
        backtest_cmd,
        backup_cmd,
        demo_cmd,
        ingest_cmd,
        notify_cmd,
        orders_cmds,
        readers,
        rebalance_cmd,
        risk_cmd,
        universe_cmd,
        warehouse_cmd,
        worker_cmd,
    )

    ingest_cmd.register(app)
    actions_cmd.register(app)
    universe_cmd.register(app)
    readers.register(app)
    demo_cmd.register(app)
    orders_cmds.register(app)
    accounts_cmd.register(app)
    risk_cmd.register(app)
    rebalance_cmd.register(app)
    backtest_cmd.register(app)
    warehouse_cmd.register(app)
    backup_cmd.register(app)
    notify_cmd.register(app)
    worker_cmd.register(app)
    register_api(app)


_register_commands()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
