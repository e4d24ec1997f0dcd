"""`trading actions load PATH`, `trading actions list` (corporate actions in the warehouse) and
`trading actions apply` (what they do to paper accounts: trading_pipeline/trading/corporate_actions.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from trading_pipeline.cli.output import JsonOpt, console, fail, frame_table, print_json
from trading_pipeline.settings import get_settings


def register(app: typer.Typer) -> None:
    actions_app = typer.Typer(help="Corporate actions: splits, dividends, symbol changes, delistings.",
                              no_args_is_help=True)

    @actions_app.command("load")
    def load_cmd(
        path: Annotated[Path, typer.Argument(help="CSV with symbol,ex_date,kind plus ratio, amount, new_symbol, pay_date where they apply.")],
        json_out: JsonOpt = False,
    ) -> None:
        """Check the whole file, then store its new actions through a Dagster run (nothing if any row is bad)."""
        from trading_pipeline import runs
        from trading_pipeline.marketdata.corporate_actions import ActionsError, read_file

        if not path.is_file():
            fail(f"no file {path}", code=2)
        try:
            read_file(path)  # the columns, before starting a run
        except ActionsError as exc:
            fail(str(exc), "see `trading actions load --help` for the columns", code=2)
        settings = get_settings()
        result = runs.run_job("load_corporate_actions", settings,
                              run_config={"ops": {"raw__corporate_actions": {"config": {"path": str(path.resolve())}}}})
        if not result.success:
            fail(runs.failure_message(result).removeprefix("Failure: "), "nothing was stored; fix the file and load it again", code=2)
        md = {k: v.value for e in result.get_asset_materialization_events() for k, v in e.materialization.metadata.items()}
        out = {"loaded": md.get("loaded", 0), "unchanged": md.get("unchanged", 0), "warnings": md.get("warnings", []),
               "run_id": result.run_id}
        if json_out:
            print_json(out)
            return
        console.print(f"[green]loaded[/] {out['loaded']} action(s); {out['unchanged']} already stored")
        for w in out["warnings"]:
            console.print(f"[yellow]warning:[/] {w}")

    @actions_app.command("list")
    def list_cmd(
        symbol: Annotated[str | None, typer.Option("--symbol", help="Only this symbol.")] = None,
        kind: Annotated[str | None, typer.Option("--kind", help="split, dividend, symbol_change or delisting.")] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """The stored corporate actions, by symbol and ex-date."""
        from trading_pipeline.marketdata import warehouse as wh
        from trading_pipeline.marketdata.corporate_actions import stored_actions

        settings = get_settings()
        if not wh.exists(settings.warehouse_path):
            fail(f"no warehouse at {settings.warehouse_path}", "load bars first (`trading ingest` or `trading demo`)", code=2)
        con = wh.connect(settings.warehouse_path, read_only=True)
        try:
            df = stored_actions(con, symbol, kind)
        finally:
            con.close()
        if json_out:
            print_json({"actions": df.drop("loaded_at").to_dicts()})
            return
        if df.is_empty():
            console.print("no corporate actions stored: `trading actions load PATH`")
            return
        console.print(frame_table(df.drop("loaded_at", "source"), title="corporate actions"))

    @actions_app.command("apply")
    def apply_cmd(
        as_of: Annotated[str | None, typer.Option(
            "--as-of", help="Apply what is due by this date (YYYY-MM-DD): splits, symbol changes and delistings "
            "on their ex-date, dividends on their pay date. Default: the newest daily session in the warehouse.")] = None,
        account: Annotated[str | None, typer.Option("--account", help="Only this account (default: every account).")] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Adjust paper accounts for due corporate actions, by hand (the order job does it before each run).

        Split: quantity x ratio, average price / ratio, and the working orders placed before the ex-date.

        Dividend: longs credited, shorts debited. Symbol change: the position moves. Delisting: a warning.

        Each action is applied once per account: running this again changes nothing.

        Live accounts (alpaca, ib) are skipped: their broker adjusts them itself.
        """
        from trading_pipeline.marketdata import warehouse as wh
        from trading_pipeline.trading.accounts import AccountsError, UnknownAccount
        from trading_pipeline.trading.corporate_actions import (
            apply_actions,
            load_actions,
            paper_and_live,
        )
        from trading_pipeline.trading.services import accounts_of
        from trading_pipeline.trading.store import OpsStore

        settings = get_settings()
        if not wh.exists(settings.warehouse_path):
            fail(f"no warehouse at {settings.warehouse_path}", "load bars first (`trading ingest` or `trading demo`)", code=2)
        day = _as_of(as_of, settings.warehouse_path)
        try:
            accts = accounts_of(settings)
            chosen = [accts.get(account)] if account else [accts.get(n) for n in accts.names()]
        except (AccountsError, UnknownAccount) as exc:
            fail(str(exc.args[0] if exc.args else exc), "list them with `trading accounts`", code=2)
        paper, live = paper_and_live(chosen)
        try:
            actions = load_actions(settings.warehouse_path)
        except ValueError as exc:
            fail(str(exc), code=2)
        store = OpsStore.from_settings(settings)
        try:
            results = apply_actions(store, actions, day, paper)
        finally:
            store.close()
        applied = [r for r in results if r.status == "applied"]
        out = {"as_of": day.isoformat(), "applied": [r.as_dict() for r in applied],
               "already_applied": len(results) - len(applied), "paper_accounts": paper,
               "skipped_live_accounts": live}
        if json_out:
            print_json(out)
            return
        if not applied:
            console.print(f"nothing new to apply as of {day} ({out['already_applied']} already applied)")
        for r in applied:
            what = {"split": f"{r.quantity_before} @ {r.avg_price_before:.4f} -> {r.quantity_after} @ {r.avg_price_after:.4f}, "
                             f"{r.orders_adjusted} working order(s) adjusted",
                    "symbol_change": f"position of {r.quantity_after} moved, {r.orders_adjusted} working order(s) moved",
                    "dividend": f"cash {r.cash_delta:+}", "delisting": r.note or ""}[r.kind]
            colour = "yellow" if r.kind == "delisting" else "green"
            console.print(f"[{colour}]{r.kind}[/] {r.account} {r.key}: {what}")
        for name in live:
            console.print(f"[dim]{name}: live broker, adjusts its own positions; skipped[/]")

    from trading_pipeline.cli import actions_sources_cmd

    actions_sources_cmd.register(actions_app)  # derive (adjusted closes), fetch (Alpaca)
    app.add_typer(actions_app, name="actions")


def _as_of(text: str | None, warehouse_path: Path | str) -> date:
    """``--as-of`` as a date, or the newest daily session in the warehouse (the market's clock,
    as the order job uses), or today without bars."""
    from trading_pipeline.marketdata import warehouse as wh

    if text:
        try:
            return date.fromisoformat(text)
        except ValueError:
            fail(f"--as-of {text!r} is not a date", "give it as YYYY-MM-DD, e.g. --as-of 2024-03-06", code=2)
    con = wh.connect(warehouse_path, read_only=True)
    try:
        row = wh.fetch_one(con, f"SELECT max(session_date) FROM {wh.bars_table('1d')} WHERE timeframe = '1d'", [])
    except Exception:  # noqa: BLE001 - no bars table yet: today
        row = None
    finally:
        con.close()
    return row[0] if row and row[0] else date.today()
