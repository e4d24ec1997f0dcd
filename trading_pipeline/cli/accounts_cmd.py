"""`trading accounts`: every account, its broker, the scans it trades, its limits and equity."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from trading_pipeline.cli.output import console, fail, print_json
from trading_pipeline.settings import get_settings


def register(app: typer.Typer) -> None:
    @app.command("accounts")
    def accounts_cmd(
        json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    ) -> None:
        """Accounts (TRADING_ACCOUNTS_FILE, or the one TRADING_ACCOUNT): broker, scans, risk overrides,
        cash and equity at the warehouse's last closes."""
        from trading_pipeline.cli.orders_cmds import _price_feed, _store
        from trading_pipeline.trading.services import account_overview

        settings = get_settings()
        try:
            view = account_overview(settings, _store(settings), _price_feed(settings))
        except (OSError, ValueError) as exc:
            fail(str(exc), "see accounts.example.yaml for the file's format", code=2)
        total = sum(a["equity"] for a in view["accounts"] if a["equity"] is not None)
        if json_out:
            print_json({**view, "total_equity": total})
            return
        source = view["source"] or "no accounts file: one account, TRADING_ACCOUNT at TRADING_BROKER"
        table = Table(title=f"accounts ({source})", header_style="bold cyan")
        for col in ("account", "broker", "scans", "risk overrides", "cash", "equity", "positions", "working"):
            table.add_column(col, justify="right" if col in ("cash", "equity", "positions", "working") else "left")
        for a in view["accounts"]:
            scans = a["scans"] if a["scans"] == "all" else (", ".join(a["scans"]) or "none (manual)")
            overrides = ", ".join(f"{k}={v}" for k, v in a["risk_overrides"].items()) or "-"
            name = a["name"] + (" (default)" if a["name"] == view["default"] else "")
            if not a["configured"]:
                name += " [yellow](not in file)[/]"
            table.add_row(name, a["broker"] or "-", scans, overrides,
                          "" if a["cash"] is None else f"{a['cash']:,.2f}",
                          "" if a["equity"] is None else f"{a['equity']:,.2f}",
                          str(a["positions"]), str(a["open_orders"]))
        table.caption = f"total equity {total:,.2f}"
        console.print(table)
