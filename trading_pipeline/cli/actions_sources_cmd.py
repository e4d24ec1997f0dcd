"""`trading actions derive FILE` (actions read back from a bar file's adjusted closes) and
`trading actions fetch` (from Alpaca's corporate actions API): two more ways into
``raw.corporate_actions`` beside `trading actions load` (trading_pipeline/marketdata/actions_sources.py).

Both store through the same checks and the same all-or-nothing transaction as a loaded file;
``--dry-run`` runs every check against the warehouse and stores nothing. Wired into the
``actions`` group by ``register(actions_app)`` in actions_cmd.py.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trading_pipeline.cli.output import JsonOpt, console, fail, frame_table, print_json
from trading_pipeline.settings import get_settings

if TYPE_CHECKING:
    import polars as pl

DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Run every check against the warehouse, store nothing.")]


def register(actions_app: typer.Typer) -> None:
    @actions_app.command("derive")
    def derive_cmd(
        path: Annotated[Path, typer.Argument(help="Daily bars (CSV or Parquet, as `trading ingest` reads them) with an "
                                             "adjusted close column: Adj Close, adj_close, adjclose or adjusted_close.")],
        tolerance: Annotated[float, typer.Option(
            "--tolerance", min=0.0, max=0.1,
            help="How far close/adj_close may move between sessions and count as no action (relative). "
                 "Raise it for adjusted closes rounded to cents.")] = 1e-4,
        dry_run: DryRunOpt = False,
        json_out: JsonOpt = False,
    ) -> None:
        """Derive splits and dividends from the adjusted closes of a bar file, then store them.

        Between sessions, m = k(t-1)/k(t) with k = close/adj_close: m near a fraction p/q (p, q <= 20,
        |m-1| > 0.2) is a split p/q; 1 < m < 1.2 is a dividend of close(t-1)*(1-1/m) unless the factor also moves
        on the session before or after (noise); any other move is a note, not stored.
        Load the bars first (`trading ingest FILE`): actions need known symbols.
        """
        from trading_pipeline.marketdata.actions_sources import ActionsSourceError, derive_file
        from trading_pipeline.marketdata.sources.files import BarFileError

        if not path.is_file():
            fail(f"no file {path}", code=2)
        try:
            derived = derive_file(path, tolerance=tolerance)
        except (ActionsSourceError, BarFileError) as exc:
            fail(str(exc), "see `trading actions derive --help`", code=2)
        _store(derived.actions, derived.notes, f"actions derived from {path.name}", dry_run, json_out,
               {"source": "adj_close", "path": str(path.resolve()), "tolerance": tolerance})

    @actions_app.command("fetch")
    def fetch_cmd(
        symbols: Annotated[str, typer.Option("--symbols", help="Comma-separated symbols, e.g. AAPL,MSFT.")],
        start: Annotated[str, typer.Option("--start", help="First ex-date (YYYY-MM-DD).")],
        end: Annotated[str, typer.Option("--end", help="Last ex-date (YYYY-MM-DD).")],
        dry_run: DryRunOpt = False,
        json_out: JsonOpt = False,
    ) -> None:
        """Fetch splits, cash dividends, name changes and worthless removals (delistings) from Alpaca, then store them.

        Uses TRADING_ALPACA_API_KEY / TRADING_ALPACA_SECRET_KEY and TRADING_ALPACA_DATA_URL_OVERRIDE, as the
        Alpaca bar source does. A bad answer is refused whole: nothing is stored.
        """
        from trading_pipeline.marketdata.actions_sources import ActionsSourceError, fetch_alpaca

        first, last = _date(start, "--start"), _date(end, "--end")
        wanted = [s.strip() for s in symbols.split(",") if s.strip()]
        if not dry_run:  # the run fetches and stores
            _store(None, [], "actions fetched from alpaca", False, json_out,
                   {"source": "alpaca", "symbols": wanted, "start": first.isoformat(), "end": last.isoformat()})
            return
        try:
            actions = fetch_alpaca(get_settings(), wanted, first, last)
        except ActionsSourceError as exc:
            fail(str(exc), code=2)
        _store(actions, [], "actions fetched from alpaca", True, json_out, {})


def _date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r} is not a date", f"give it as YYYY-MM-DD, e.g. {option} 2024-03-06", code=2)
    raise AssertionError  # fail() exits


def _store(actions: pl.DataFrame | None, notes: list[str], label: str, dry_run: bool, json_out: bool,
           run_config: dict[str, Any]) -> None:
    """Store ``actions`` through a Dagster run of ``load_corporate_actions`` (``run_config``: the
    asset's ActionsConfig; the run derives or fetches them again itself), or with --dry-run check
    them in a transaction that is rolled back; print what happened."""
    from trading_pipeline.marketdata import warehouse as wh
    from trading_pipeline.marketdata.actions_sources import store_actions
    from trading_pipeline.marketdata.corporate_actions import ActionsError

    settings = get_settings()
    if not wh.exists(settings.warehouse_path):
        fail(f"no warehouse at {settings.warehouse_path}", "load the bars first (`trading ingest PATH`)", code=2)
    hint = "nothing was stored; line N is the N-th action found (fix the source, or load the bars of unknown symbols first)"
    if dry_run:
        try:
            result = store_actions(settings.warehouse_path, actions, label, dry_run=True)
        except ActionsError as exc:
            fail(str(exc), hint, code=2)
        loaded, unchanged, warnings = result.loaded, result.unchanged, result.warnings
        listed = actions.drop("warning").to_dicts()
        run_id = None
    else:
        from trading_pipeline import runs

        r = runs.run_job("load_corporate_actions", settings,
                         run_config={"ops": {"raw__corporate_actions": {"config": run_config}}})
        if not r.success:
            fail(runs.failure_message(r).removeprefix("Failure: "), hint, code=2)
        md = {k: v.value for e in r.get_asset_materialization_events() for k, v in e.materialization.metadata.items()}
        loaded, unchanged, warnings = md.get("loaded", 0), md.get("unchanged", 0), md.get("warnings", [])
        listed, run_id = md.get("actions", []), r.run_id
        if actions is None:
            import polars as pl

            actions = pl.DataFrame(listed) if listed else pl.DataFrame({"symbol": [], "warning": []})
        notes = md.get("notes", notes)
    out: dict[str, Any] = {"dry_run": dry_run, "loaded": loaded, "unchanged": unchanged, "warnings": warnings,
                           "notes": notes, "actions": listed, **({"run_id": run_id} if run_id else {})}
    if json_out:
        print_json(out)
        return
    if actions.height:
        console.print(frame_table(actions.drop("warning", strict=False), title=label))
    verb = "would load" if dry_run else "loaded"
    console.print(f"[green]{verb}[/] {loaded} action(s); {unchanged} already stored")
    for w in warnings:
        console.print(f"[yellow]warning:[/] {w}")
    for n in notes:
        console.print(f"[dim]note:[/] {n}")
