"""`trading actions load PATH` and `trading actions list`: corporate actions in the warehouse."""

from __future__ import annotations

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

    app.add_typer(actions_app, name="actions")
