"""Backing up and restoring a whole home: both stores at once, and a restore swaps both or
refuses before touching either; the nightly backup with its retention."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trading_pipeline.backup.files import discard, drop_wal
from trading_pipeline.backup.lake import back_up_lake, bar_counts, lake_or_none, stage_lake
from trading_pipeline.backup.manifest import (
    BAR_TABLES,
    COUNTED,
    FORMAT,
    MANIFEST,
    OPS_PGDUMP,
    BackupError,
    Refused,
    Step,
    noop,
    sha256,
    tool_version,
    verify,
)
from trading_pipeline.backup.ops_store import back_up_ops, ops_kind, sqlite_file, stage_ops
from trading_pipeline.backup.postgres import (
    conninfo_env,
    drop_tables_sql,
    restore_dump,
    url_env,
)
from trading_pipeline.backup.running import running, stop_writers
from trading_pipeline.settings import Settings

NIGHTLY = re.compile(r"^backup-\d{8}T\d{6}Z$")  # folders the nightly job writes (and prunes)
RESTORED_REASON = "restored from a backup made {created}: reconcile (`trading order sync`), then `trading kill-switch off`"


def create(settings: Settings, dest: Path, step: Step = noop) -> dict[str, Any]:
    """Back the home up into the new folder ``dest`` (written beside it, then renamed: a
    half-made backup never has the final name). Online: writers may keep running."""
    from trading_pipeline.trading.store import migrations

    dest = dest.expanduser().resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not an empty folder", "give a new folder for the backup")
    tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        step("copying the ops store")
        ops = back_up_ops(settings, tmp)
        step("copying the warehouse catalog and its data files")
        lake = back_up_lake(settings, tmp, step)
        step("checksumming")
        files = [{"path": str(p.relative_to(tmp)), "bytes": p.stat().st_size, "sha256": sha256(p)}
                 for p in sorted(tmp.rglob("*")) if p.is_file()]
        manifest = {
            "format": FORMAT, "tool": "trading-pipeline", "tool_version": tool_version(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "home": str(settings.home),
            "ops_store": {**{k: v for k, v in ops.items() if k != "counts"},
                          "schema_version": migrations.version_of(ops["schema_revision"])},
            "warehouse": {k: v for k, v in lake.items() if k != "counts"} if lake else None,
            "counts": {**ops["counts"], "bars_daily": lake["counts"]["raw.bars_daily"] if lake else 0,
                       "bars_intraday": lake["counts"]["raw.bars_intraday"] if lake else 0},
            "files": files,
            "bytes": sum(f["bytes"] for f in files),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def check_compatible(settings: Settings, manifest: dict[str, Any]) -> None:
    """:class:`Refused` for a backup this code or this home cannot take: a newer ops-store
    revision, another kind of ops store or lake catalog (no conversion)."""
    from trading_pipeline.trading.store import migrations

    ops = manifest["ops_store"]
    known = migrations.revisions()
    if ops.get("schema_revision") not in known and ops.get("schema_revision") is not None:
        raise Refused(f"the backup's ops store is at schema revision {ops['schema_revision']!r}, newer than this "
                      f"release knows (head {migrations.head()})",
                      f"restore it with trading-pipeline {manifest.get('tool_version')} or newer")
    here = ops_kind(settings.ops_store_url)
    if ops["kind"] != here:
        raise Refused(f"the backup's ops store is {ops['kind']} but this home's is {here} (TRADING_OPS_URL)",
                      "restore onto a home of the same kind: set TRADING_OPS_URL like the backed-up home's "
                      "(a SQLite file or a Postgres URL)")
    lake = manifest.get("warehouse")
    if lake is None:
        return
    try:
        lake_or_none(settings)
    except BackupError as exc:
        raise Refused(str(exc), exc.hint) from None
    from trading_pipeline.marketdata import warehouse as wh

    here = wh.lake(settings.warehouse_path).catalog_type
    if lake["catalog_type"] != here:
        raise Refused(f"the backup's lake catalog is {lake['catalog_type']} but this home's is {here} (TRADING_WAREHOUSE)",
                      "restore onto a home of the same kind: set TRADING_WAREHOUSE like the backed-up home's")


def restore(settings: Settings, backup: Path, *, force: bool = False, wait: float = 60.0,
            step: Step = noop) -> dict[str, Any]:
    """Put the backup at ``backup`` in place of the home's ops store and lake: checks first
    (:class:`Refused`: nothing touched), staging beside the targets, then the swap: Postgres
    parts first (each one transaction), then the renames of the staged files."""
    backup = backup.expanduser().resolve()
    step("verifying checksums")
    manifest = verify(backup)
    check_compatible(settings, manifest)
    busy = running(settings)
    warnings: list[str] = []
    if busy and not force:
        raise Refused("the home is running: " + "; ".join(busy),
                      "stop the API and let runs finish (the Dagster UI shows them), or pass --force: it engages "
                      "the kill switch and waits for in-flight runs (never kills them)")
    if force and busy:
        warnings = [f"{w}: restart it after the restore (it still sees the old files)" for w in stop_writers(settings, wait, step)]
    step("staging the restored files beside the home")
    staged_ops = stage_ops(settings, backup, manifest)
    try:
        lake = stage_lake(settings, backup, manifest)
    except BaseException:
        discard(staged_ops)
        raise
    staged = [staged_ops, *((lake["staged_data"], lake["staged_catalog"]) if lake else ())]
    step("swapping them in")
    try:
        if manifest["ops_store"]["kind"] == "postgresql":
            from trading_pipeline.trading.store.schema import metadata

            restore_dump(backup / OPS_PGDUMP, url_env(settings.ops_store_url),
                        drop_tables_sql(names=[*metadata.tables, "alembic_version", "schema_version"]), "",
                        "restoring the ops store")
        if lake and lake["lake"].catalog_type == "postgres":
            data = f"{lake['data']}/".replace("'", "''")
            restore_dump(backup / manifest["warehouse"]["catalog"], conninfo_env(lake["lake"].catalog),
                        drop_tables_sql(like="ducklake\\_%"),
                        f"RESET search_path;\nUPDATE ducklake_metadata SET value = '{data}' WHERE key = 'data_path';",
                        "restoring the lake catalog")
    except BaseException as exc:
        discard(*staged)
        if isinstance(exc, BackupError) and manifest["ops_store"]["kind"] == "postgresql" and "lake catalog" in str(exc):
            raise BackupError(f"{exc}; the Postgres ops store WAS restored already, the lake was not",
                              "fix the cause and run the restore again (it replaces both)") from None
        raise
    if staged_ops is not None:
        target = sqlite_file(settings.ops_store_url)
        drop_wal(target)
        os.replace(staged_ops, target)
    if lake is not None:
        data = lake["data"]
        old = data.parent / f".{data.name}.old-{os.getpid()}"
        if data.exists():
            os.replace(data, old)
        os.replace(lake["staged_data"], data)
        if lake["staged_catalog"] is not None:
            catalog = lake["lake"].catalog_file
            drop_wal(catalog)
            os.replace(lake["staged_catalog"], catalog)
        shutil.rmtree(old, ignore_errors=True)
    from trading_pipeline.trading.store import OpsStore

    store = OpsStore.from_settings(settings)  # migrates an older backup up to this release's head
    try:
        store.set_kill_switch(True, RESTORED_REASON.format(created=manifest["created_at"]), "trading backup restore")
    finally:
        store.close()
    counts = counts_of(settings)
    if {k: counts[k] for k in manifest["counts"]} != manifest["counts"]:
        warnings.append(f"the restored home holds {counts}, the manifest says {manifest['counts']}")
    return {"backup": str(backup), "created_at": manifest["created_at"], "counts": counts,
            "manifest_counts": manifest["counts"], "kill_switch": True, "warnings": warnings}


def counts_of(settings: Settings) -> dict[str, int]:
    """Rows of orders, fills, positions and warehouse bars in the home now."""
    import sqlalchemy as sa

    from trading_pipeline.trading.store import OpsStore

    store = OpsStore.from_settings(settings)
    try:
        with store.reading() as conn:
            out = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in COUNTED}
    finally:
        store.close()
    lk = lake_or_none(settings)
    bars = bar_counts(lk.location) if lk is not None else dict.fromkeys(BAR_TABLES, 0)
    return {**out, "bars_daily": bars["raw.bars_daily"], "bars_intraday": bars["raw.bars_intraday"]}


def backup_dir(settings: Settings) -> Path:
    """TRADING_BACKUP_DIR, else $TRADING_HOME/backups."""
    return Path(settings.backup_dir).expanduser().resolve() if settings.backup_dir.strip() else settings.home / "backups"


def nightly(settings: Settings, *, keep: int | None = None, now: datetime | None = None,
            step: Step = noop) -> dict[str, Any]:
    """A new backup in TRADING_BACKUP_DIR named by its UTC time, verified, then retention: the
    newest ``keep`` (TRADING_BACKUP_KEEP) nightly backups stay, older ones go. Nothing is deleted
    unless the new backup verified; folders not named like ours are never touched."""
    keep = settings.backup_keep if keep is None else keep
    root = backup_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    dest = root / f"backup-{stamp}"
    manifest = create(settings, dest, step)
    verify(dest)
    ours = sorted(p for p in root.iterdir() if p.is_dir() and NIGHTLY.match(p.name) and (p / MANIFEST).exists())
    deleted = []
    for old in ours[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
        deleted.append(old.name)
    return {"path": str(dest), "bytes": manifest["bytes"], "counts": manifest["counts"], "deleted": deleted,
            "kept": [p.name for p in ours[-keep:]] if keep > 0 else [p.name for p in ours]}
