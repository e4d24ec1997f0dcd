"""`trading warehouse compact|migrate`: look after the DuckLake warehouse.

Both change the warehouse, so both run as Dagster jobs (``lake_maintenance``,
``warehouse_migrate``: defs/maintenance.py), recorded in the instance under TRADING_HOME.
A migration's source is checked here first: one that cannot be read (missing, written by a
newer DuckDB) is refused with what to do, exit 2, before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trading_pipeline.cli.output import (
    JsonOpt,
    console,
    err_console,
    fail,
    print_json,
    progress_bar,
)
from trading_pipeline.settings import get_settings

warehouse_app = typer.Typer(help="Look after the warehouse: compact the lake, migrate an old DuckDB file into it.",
                            no_args_is_help=True)


def _refuse(message: str, hint: str | None = None, commands: list[str] | None = None, *,
            json_out: bool, code: int = 2) -> None:
    if json_out:
        print_json({"error": message, **({"hint": hint} if hint else {}), **({"commands": commands} if commands else {})})
        raise typer.Exit(code)
    if commands:
        err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
        err_console.print(f"[yellow]hint:[/] {hint}", soft_wrap=True)
        for c in commands:
            err_console.print(f"  {c}", soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(code)
    fail(message, hint, code=code)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


@warehouse_app.command("compact")
def compact(
    keep_days: Annotated[float | None, typer.Option("--keep-days", min=0, help="Keep snapshots this many days back "
                                                     "(default TRADING_LAKE_SNAPSHOT_RETENTION_DAYS, 7).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Compact the lake now: few files, and snapshots only as far back as the retention.

    What the daily lake_maintenance schedule does: rows inlined in the catalog go to files,
    small files are merged, snapshots past the retention are expired (never a published one)
    and files nothing references any more are deleted."""
    from trading_pipeline import runs
    from trading_pipeline.marketdata import warehouse as wh
    from trading_pipeline.marketdata.migrate import legacy_warehouse_hint

    settings = get_settings()
    path = settings.warehouse_path
    if not wh.is_lake(path):
        _refuse(f"the warehouse {path} is a {wh.describe(path)}: compaction is for a DuckLake",
                "move it into the lake with `trading warehouse migrate --from PATH` (and unset TRADING_WAREHOUSE)",
                json_out=json_out)
    if not wh.exists(path):
        _refuse(f"no warehouse at {path}", legacy_warehouse_hint(settings) or "nothing to compact: run `trading demo` "
                "or `trading ingest PATH` first", json_out=json_out, code=1)
    days = settings.lake_snapshot_retention_days if keep_days is None else keep_days
    with progress_bar() as progress:
        task = progress.add_task(f"compacting the lake (lake_maintenance, keeping {days:g} days of snapshots)", total=1)
        result = runs.run_job("lake_maintenance", settings,
                              run_config={"ops": {"compact_lake": {"config": {"keep_snapshots_days": days}}}})
        progress.advance(task)
    if not result.success:
        fail(f"lake_maintenance run {result.run_id} failed: {runs.failure_message(result)}",
             "see the run in the Dagster UI (make up); each step commits on its own, and none changes the data")
    out = {"run_id": result.run_id, **result.output_for_node("compact_lake")}
    if json_out:
        print_json(out)
        return
    from rich.table import Table

    b, a = out["before"], out["after"]
    table = Table(title="lake compaction", header_style="bold cyan")
    for col in ("", "before", "after"):
        table.add_column(col, justify="left" if not col else "right")
    rows = [("snapshots", "snapshots", str), ("files the retained snapshots read", "files", str),
            ("size of those files", "bytes", _size), ("files the current snapshot reads", "data_files", str),
            ("files awaiting deletion", "awaiting_deletion", str), ("rows inlined in the catalog", "inlined_rows", str)]
    if "disk_files" in b:
        rows += [("files on disk", "disk_files", str), ("bytes on disk", "disk_bytes", _size)]
    for label, key, fmt in rows:
        table.add_row(label, fmt(b[key]), fmt(a[key]))
    console.print(table)
    kept = f"snapshots since {out['kept_since'][:19]} UTC"
    if out["published_snapshot"] is not None:
        kept += f" and from the published snapshot {out['published_snapshot']} on"
    console.print(f"flushed {out['inlined_rows_flushed']:,} inlined rows, rewrote {out['files_rewritten']:,} and merged "
                  f"{out['files_merged']:,} files, expired {out['snapshots_expired']:,} snapshots, deleted "
                  f"{out['files_deleted'] + out['orphans_deleted']:,} files in {out['seconds']:.1f} s; kept {kept} "
                  f"(run {result.run_id[:8]})")
    if a["awaiting_deletion"]:
        console.print(f"{a['awaiting_deletion']:,} replaced files wait {out['file_grace_seconds'] / 60:g} minutes (a query "
                      "that began before may still read them): the next compaction deletes them")


@warehouse_app.command("migrate")
def migrate_cmd(
    from_: Annotated[Path | None, typer.Option("--from", help="The old DuckDB warehouse file "
                                               "(default: $TRADING_HOME/warehouse.duckdb).")] = None,
    from_export: Annotated[Path | None, typer.Option("--from-export", help="A folder written by EXPORT DATABASE "
                                                     "'<dir>' (FORMAT parquet) from the old file instead.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Copy a warehouse from before DuckLake (warehouse.duckdb) into the lake.

    Copies the raw bars, rejected rows, symbols, load records, the ops mirror and stored
    backtests; `trading scan` then rebuilds the marts. The old file is only read, never
    changed or removed; running this again copies nothing twice."""
    from trading_pipeline import runs
    from trading_pipeline.marketdata import migrate
    from trading_pipeline.marketdata import warehouse as wh

    settings = get_settings()
    if from_ is not None and from_export is not None:
        _refuse("give --from or --from-export, not both", json_out=json_out)
    target = settings.warehouse_path
    if not wh.is_lake(target):
        _refuse(f"the warehouse {target} is a {wh.describe(target)}, not a DuckLake",
                "migrate copies into the lake: unset TRADING_WAREHOUSE (the default lake in $TRADING_HOME/warehouse/) "
                "or point it at a ducklake:... location", json_out=json_out)
    source_file = None if from_export is not None else (from_ or migrate.legacy_file(settings)).expanduser().resolve()
    export_dir = from_export.expanduser().resolve() if from_export is not None else None
    try:
        found = migrate.inspect(source_file=source_file, export_dir=export_dir)
    except migrate.MigrationError as exc:
        _refuse(str(exc), exc.hint or "nothing was written", exc.commands, json_out=json_out)
    if not found["tables"]:
        _refuse(f"{found['path']} holds no raw, ops or backtest tables: nothing to migrate",
                "pass the warehouse.duckdb of the home to migrate with --from PATH", json_out=json_out)
    rows = sum(found["tables"].values())
    config = {"source_file": str(source_file) if source_file else "", "export_dir": str(export_dir) if export_dir else ""}
    with progress_bar() as progress:
        task = progress.add_task(f"copying {len(found['tables'])} tables ({rows:,} rows) into the lake "
                                 "(warehouse_migrate)", total=1)
        result = runs.run_job("warehouse_migrate", settings,
                              run_config={"ops": {"migrate_warehouse": {"config": config}}})
        progress.advance(task)
    if not result.success:
        fail(f"warehouse_migrate run {result.run_id} failed: {runs.failure_message(result)}",
             f"the lake is as it was before (the copy is one transaction); {found['path']} is unchanged")
    out = {"run_id": result.run_id, **result.output_for_node("migrate_warehouse"),
           "next": "trading scan", "old_warehouse": found["path"]}
    if out["rows_copied"]:  # the CLI's readers (and `trading scan`) read what is published: publish the bars
        publish = runs.run_job("publish_serving", settings)
        out["published"] = publish.success
        if not publish.success:
            err_console.print(f"[yellow]warning:[/] publishing the migrated bars failed: {runs.failure_message(publish)}; "
                              "`trading scan --date YYYY-MM-DD` publishes them", soft_wrap=True)
    if json_out:
        print_json(out)
        return
    from rich.table import Table

    table = Table(title="migrated into the lake", header_style="bold cyan")
    for col in ("table", "old warehouse", "copied", "lake"):
        table.add_column(col, justify="left" if col == "table" else "right")
    for name, t in out["tables"].items():
        table.add_row(name, f"{t['source_rows']:,}", f"{t['copied']:,}" if "kept" not in t else "kept the lake's",
                      f"{t['lake_rows']:,}")
    console.print(table)
    console.print(f"copied {out['rows_copied']:,} rows into {target} in {out['seconds']:.1f} s (lake snapshot {out['snapshot_id']}, "
                  f"run {result.run_id[:8]}); every row of the old warehouse is in the lake")
    what = "old warehouse" if found["kind"] == "file" else "export"
    console.print(f"the {what} is left as it was: {found['path']}", soft_wrap=True)
    console.print("next: run `trading scan` to rebuild the marts (indicators, signals) from the migrated bars")


def register(app: typer.Typer) -> None:
    app.add_typer(warehouse_app, name="warehouse")
