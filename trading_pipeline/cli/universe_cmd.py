"""`trading universe list` and `trading universe show NAME`: the universes file, and who is in a
universe on a session (point in time), with the reason each symbol was kept or dropped."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from trading_pipeline.cli.output import JsonOpt, console, fail, print_json
from trading_pipeline.settings import get_settings

FileOpt = Annotated[Path | None, typer.Option(
    "--file", help="Universes file (default TRADING_UNIVERSES_FILE, ./universes.yaml; see universes.example.yaml).")]


def register(app: typer.Typer) -> None:
    universe_app = typer.Typer(
        help="Universes: named symbol sets (universes.yaml) that scans and scheduled ingests use, "
        "resolved point in time per session.", no_args_is_help=True)

    @universe_app.command("list")
    def list_cmd(file: FileOpt = None, json_out: JsonOpt = False) -> None:
        """The universes in the file: kind, filters, description (exit 2 if the file is invalid)."""
        from rich.table import Table

        from trading_pipeline.marketdata.universes import UniverseError, load_universes

        settings = get_settings()
        path = file or settings.universes_file
        try:
            universes = load_universes(path)
        except UniverseError as exc:
            fail(str(exc), "fix the file (universes.example.yaml documents every field)", code=2)
        rows = [{"name": u.name, "kind": u.kind,
                 "source": (", ".join(u.symbols) if u.symbols is not None else str(u.file) if u.file else
                            "the warehouse's symbols" if u.stored else "Alpaca's asset list"),
                 "filters": {k: getattr(u, k) for k in ("min_price", "min_avg_dollar_volume", "exchanges")
                             if getattr(u, k) is not None}
                 | ({"adv_window": u.adv_window} if u.min_avg_dollar_volume is not None else {}),
                 "description": u.description} for u in universes.values()]
        if json_out:
            print_json({"file": str(path), "scheduled": settings.universe or None, "universes": rows})
            return
        table = Table(title=f"{path} ({len(rows)} universes)")
        for col in ("name", "kind", "source", "filters", "description"):
            table.add_column(col, overflow="fold")
        for r in rows:
            mark = " (TRADING_UNIVERSE)" if r["name"] == settings.universe else ""
            table.add_row(r["name"] + mark, r["kind"], r["source"],
                          " ".join(f"{k}={v}" for k, v in r["filters"].items()), r["description"])
        console.print(table)

    @universe_app.command("show")
    def show_cmd(
        name: Annotated[str, typer.Argument(help="A universe in the file (`trading universe list`).")],
        on: Annotated[str | None, typer.Option(
            "--date", help="Session YYYY-MM-DD to resolve for (default: the newest stored session, else today).")] = None,
        verbose: Annotated[bool, typer.Option(
            "--verbose", "-v", help="Every candidate with the reason it was kept or dropped.")] = False,
        ingest: Annotated[bool, typer.Option(
            "--ingest", help="As a scheduled ingest resolves it: symbols with no bars yet are kept.")] = False,
        file: FileOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Who is in universe NAME on a session: only bars, delistings and filters up to that date count."""
        from trading_pipeline.cli.output import frame_table
        from trading_pipeline.marketdata.universes import UniverseError, resolve_named

        settings = get_settings()
        if file is not None:
            settings = settings.model_copy(update={"universes_file": file})
        try:
            session = date.fromisoformat(on) if on else None
        except ValueError:
            fail(f"--date {on!r} is not a date", "give it as YYYY-MM-DD", code=2)
        try:
            res = resolve_named(name, settings, session, for_ingest=ingest)
        except UniverseError as exc:
            fail(str(exc), "`trading universe list` shows the universes; fix the file or the name", code=2)
        if json_out:
            print_json({"file": str(settings.universes_file), **res.as_dict()})
            return
        console.print(f"[bold]{res.universe}[/] ({res.kind}) on {res.session}: [green]{len(res.symbols)}[/] in, "
                      f"{len(res.dropped)} dropped" + (" (as a scheduled ingest)" if ingest else ""))
        if not res.symbols:
            console.print(f"[yellow]{res.empty_message(settings.universes_file)}[/]")
        elif not verbose:
            console.print(" ".join(res.symbols))
        if verbose and res.members:
            import polars as pl

            df = pl.DataFrame([{"symbol": m.symbol, "in": "yes" if m.kept else "no", "reason": m.reason}
                               for m in res.members])
            console.print(frame_table(df, title=f"{res.universe} on {res.session}", max_rows=10_000))

    app.add_typer(universe_app, name="universe")
