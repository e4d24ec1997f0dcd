"""`trading backup create|restore`: back the home up (ops store + warehouse) and put a backup back.

The work is in ``trading_pipeline/backup/``; this module only reports it. A restore that is
refused (corrupt or incomplete backup, newer schema, other kind of store, a running home)
exits 2 and has changed nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trading_pipeline.cli.output import JsonOpt, console, fail, print_json, progress_bar
from trading_pipeline.settings import get_settings

backup_app = typer.Typer(
    help="Back up the ops store (orders, fills, positions) and the warehouse (the DuckLake catalog and its "
    "data files) into a folder with a checksummed manifest, and restore one.",
    no_args_is_help=True,
)


def _refuse(exc: Exception, json_out: bool, code: int) -> None:
    hint = getattr(exc, "hint", "") or None
    if json_out:
        print_json({"error": str(exc), **({"hint": hint} if hint else {})})
        raise typer.Exit(code)
    fail(str(exc), hint, code=code)


@backup_app.command("create")
def create_cmd(
    path: Annotated[Path, typer.Argument(help="A new (or empty) folder to write the backup into.")],
    json_out: JsonOpt = False,
) -> None:
    """Back up this home into a new folder, while it runs.

    The ops store (SQLite online backup or pg_dump) and the lake's SQLite catalog with every data file it references, plus manifest.json (tool version,
    schema revision, catalog version, each file's size and sha256, row counts)."""
    from trading_pipeline import backup

    settings = get_settings()
    try:
        with progress_bar() as progress:
            task = progress.add_task("backing up", total=None)
            manifest = backup.create(settings, path, lambda what: progress.update(task, description=what))
            progress.update(task, description="done", total=1, completed=1)
    except backup.BackupError as exc:
        _refuse(exc, json_out, 1)
    out = {"path": str(path.expanduser().resolve()), **{k: v for k, v in manifest.items() if k != "files"},
           "files": len(manifest["files"])}
    if json_out:
        print_json(out)
        return
    c = manifest["counts"]
    console.print(f"backup written to {out['path']}: {out['files']} files, {manifest['bytes']:,} bytes")
    console.print(f"ops store ({manifest['ops_store']['kind']}, revision {manifest['ops_store']['schema_revision']}): "
                  f"{c['orders']:,} orders, {c['fills']:,} fills, {c['positions']:,} positions")
    wh = manifest["warehouse"]
    console.print(f"warehouse: {c['bars_daily']:,} daily and {c['bars_intraday']:,} intraday bars"
                  + (f" (lake snapshot {wh['snapshot_id']}, {wh['data_files']} data files)" if wh else " (no lake yet)"))


@backup_app.command("restore")
def restore_cmd(
    path: Annotated[Path, typer.Argument(help="A folder written by `trading backup create` (or the backup job).")],
    force: Annotated[bool, typer.Option("--force", help="Restore onto a running home: engage the kill switch and "
                                        "wait for in-flight Dagster runs to finish (never kills them).")] = False,
    wait: Annotated[float, typer.Option("--wait", min=0, help="With --force: seconds to wait for in-flight runs "
                                        "before refusing.")] = 60.0,
    json_out: JsonOpt = False,
) -> None:
    """Put a backup in place of this home's ops store and lake.

    Checks first (every file's
    sha256, the schema revision, the kind of store) and that the home is not running (no Dagster
    run in flight, no other process with the ops store or lake catalog open). Refusals exit 2 and
    change nothing. The restored store starts with the kill switch ON: reconcile, then switch it off."""
    from trading_pipeline import backup

    settings = get_settings()
    try:
        with progress_bar() as progress:
            task = progress.add_task("restoring", total=None)
            out = backup.restore(settings, path, force=force, wait=wait,
                                 step=lambda what: progress.update(task, description=what))
            progress.update(task, description="done", total=1, completed=1)
    except backup.Refused as exc:
        _refuse(exc, json_out, 2)
    except backup.BackupError as exc:
        _refuse(exc, json_out, 1)
    out["next"] = ["trading order sync", "trading scan", "trading kill-switch off"]
    if json_out:
        print_json(out)
        return
    c = out["counts"]
    console.print(f"restored {out['backup']} (made {out['created_at']}): {c['orders']:,} orders, {c['fills']:,} fills, "
                  f"{c['positions']:,} positions, {c['bars_daily']:,} daily and {c['bars_intraday']:,} intraday bars")
    for w in out["warnings"]:
        console.print(f"[yellow]warning:[/] {w}", soft_wrap=True)
    console.print("the kill switch is ON: reconcile with the broker (`trading order sync`), publish the restored "
                  "lake (`trading scan`), then `trading kill-switch off`")


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
