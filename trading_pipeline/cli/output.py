"""Shared output for CLI commands: Rich tables for people, JSON/CSV for machines."""

from __future__ import annotations

import json
import os
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:  # polars costs 0.4 s to import: only the commands that print frames load it
    import polars as pl

# Piped or captured output has no terminal width; Rich would fold tables at 80 columns. Use a
# wide line instead (COLUMNS still wins, as for any terminal program).
PIPE_WIDTH = 200


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=PIPE_WIDTH if wide else None)


console = _console()
err_console = _console(stderr=True)


def _default(o: Any) -> Any:
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, Decimal):
        return str(o)
    return str(o)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_default, indent=2) + "\n")


MAX_CELL = 48  # characters a table cell shows before an ellipsis
MIN_CELL = 6


def _is_nested(dtype: pl.DataType) -> bool:
    import polars as pl

    nested = (pl.List, pl.Array, pl.Struct, pl.Object)
    return isinstance(dtype, nested) or dtype.base_type() in nested


def nested_as_json(df: pl.DataFrame) -> pl.DataFrame:
    """Nested columns (lists, structs: ``SHOW ALL TABLES``' column_names...) as JSON text, so
    CSV can hold them and a table can show them."""
    import polars as pl

    cols = [c for c in df.columns if _is_nested(df[c].dtype)]
    if not cols:
        return df
    return df.with_columns(
        pl.Series(c, [None if v is None else json.dumps(v, default=_default) for v in df[c].to_list()],
                  dtype=pl.String)
        for c in cols
    )


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.4f}".rstrip("0").rstrip(".")
    return " ".join(str(v).split()) if isinstance(v, str) else str(v)  # one line per row


def frame_table(df: pl.DataFrame, title: str | None = None, max_rows: int = 200, width: int | None = None,
                max_cell: int = MAX_CELL) -> Table:
    """A table for people: one line per row (long cells end in an ellipsis, at most
    ``MAX_CELL`` characters), nested values as JSON text, and only the columns that fit the
    terminal (the caption names the others; ``--json``/``--csv`` have everything)."""
    df = nested_as_json(df)
    shown = df.head(max_rows)
    cells = {c: [_cell(v) for v in shown[c].to_list()] for c in df.columns}
    width = width or console.width
    need = {c: min(max([len(c), *(len(x) for x in cells[c])]), max_cell) for c in df.columns}
    least = {c: min(need[c], max(MIN_CELL, min(len(c), 12))) for c in df.columns}
    keep = list(df.columns)
    while keep and sum(least[c] + 3 for c in keep) + 1 > width:  # 3: padding and border
        keep.pop()
    hidden = df.columns[len(keep):]
    widths = {c: need[c] for c in keep}
    over = sum(w + 3 for w in widths.values()) + 1 - width
    while over > 0:  # narrow the widest columns first, never below their least width
        c = max((c for c in keep if widths[c] > least[c]), key=lambda c: widths[c])
        widths[c] -= 1
        over -= 1
    table = Table(title=title, header_style="bold cyan")
    for c in keep:
        justify = "right" if df[c].dtype.is_numeric() else "left"
        table.add_column(c, justify=justify, no_wrap=True, overflow="ellipsis",
                         min_width=widths[c], max_width=widths[c])
    for i in range(shown.height):
        table.add_row(*[cells[c][i] for c in keep])
    notes = []
    if df.height > max_rows:
        notes.append(f"{max_rows} of {df.height} rows shown")
    if hidden:
        notes.append(f"{len(hidden)} column(s) not shown: {', '.join(hidden)} (select fewer, or --json/--csv)")
    if notes:
        table.caption = "; ".join(notes)
    return table


def fail(message: str, hint: str | None = None, code: int = 1) -> None:
    import typer

    # soft_wrap: one line each, whatever the terminal's width (the terminal may fold it)
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    if hint:
        err_console.print(f"[yellow]hint:[/] {hint}", soft_wrap=True)
    raise typer.Exit(code)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def progress_bar() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=err_console,
        transient=False,
    )
