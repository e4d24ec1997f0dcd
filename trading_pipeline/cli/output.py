"""Shared output for CLI commands: Rich tables for people, JSON/CSV for machines."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def _default(o: Any) -> Any:
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, Decimal):
        return str(o)
    return str(o)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_default, indent=2) + "\n")


def frame_table(df: pl.DataFrame, title: str | None = None, max_rows: int = 200) -> Table:
    table = Table(title=title, header_style="bold cyan")
    for c in df.columns:
        justify = "right" if df[c].dtype.is_numeric() else "left"
        table.add_column(c, justify=justify)
    for row in df.head(max_rows).iter_rows():
        table.add_row(*["" if v is None else (f"{v:,.4f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)) for v in row])
    if df.height > max_rows:
        table.caption = f"{max_rows} of {df.height} rows shown"
    return table


def fail(message: str, hint: str | None = None, code: int = 1) -> None:
    import typer

    err_console.print(f"[bold red]error:[/] {message}")
    if hint:
        err_console.print(f"[yellow]hint:[/] {hint}")
    raise typer.Exit(code)
