"""The ops store's part of a backup: SQLite by the online backup API, Postgres by pg_dump in an
exported snapshot (so the counts in the manifest are the dump's)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from trading_pipeline.backup.files import sqlite_copy
from trading_pipeline.backup.manifest import COUNTED, OPS_PGDUMP, OPS_SQLITE, BackupError, Refused
from trading_pipeline.backup.postgres import pg_binary, run, url_env
from trading_pipeline.settings import Settings


def ops_kind(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql" if url.startswith("postgres") else url.split(":")[0]


def sqlite_file(url: str) -> Path:
    import sqlalchemy as sa

    db = sa.engine.make_url(url).database
    if not db or db == ":memory:":
        raise BackupError(f"the ops store {url!r} is not a file", "set TRADING_OPS_URL to a SQLite file or Postgres URL")
    return Path(db)


def sqlite_facts(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rev = con.execute("SELECT version_num FROM alembic_version").fetchone()
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}
    finally:
        con.close()
    return {"schema_revision": rev[0] if rev else None, "counts": counts}


def back_up_ops(settings: Settings, out: Path) -> dict[str, Any]:
    url = settings.ops_store_url
    kind = ops_kind(url)
    if kind == "sqlite":
        src = sqlite_file(url)
        if not src.exists():
            raise BackupError(f"no ops store at {src}", "nothing to back up yet: place an order or run `trading demo` first")
        sqlite_copy(src, out / OPS_SQLITE)
        return {"kind": kind, "file": OPS_SQLITE, **sqlite_facts(out / OPS_SQLITE)}
    if kind != "postgresql":
        raise BackupError(f"cannot back up an ops store of kind {kind!r}", "use SQLite or Postgres (TRADING_OPS_URL)")
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:  # one snapshot for the counts and the dump: they agree
            conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ")
            snap = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
            rev = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            counts = {t: conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar() for t in COUNTED}
            (out / "ops").mkdir(parents=True, exist_ok=True)
            run([pg_binary("pg_dump"), "-Fc", "--no-owner", "--no-privileges", f"--snapshot={snap}",
                  "-f", str(out / OPS_PGDUMP)], url_env(url), "pg_dump of the ops store")
            conn.exec_driver_sql("COMMIT")
    finally:
        engine.dispose()
    return {"kind": kind, "file": OPS_PGDUMP, "schema_revision": rev, "counts": counts}


def stage_ops(settings: Settings, backup: Path, manifest: dict[str, Any]) -> Path | None:
    """SQLite: a checked copy beside the store (swapped in by rename). Postgres: nothing to
    stage (the restore's one transaction is the swap)."""
    if manifest["ops_store"]["kind"] != "sqlite":
        return None
    target = sqlite_file(settings.ops_store_url)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.parent / f".{target.name}.restore-{os.getpid()}"
    shutil.copyfile(backup / OPS_SQLITE, staged)
    con = sqlite3.connect(str(staged))
    try:
        ok = con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()
    facts = sqlite_facts(staged)
    if ok != "ok" or facts["counts"] != {t: manifest["counts"][t] for t in COUNTED}:
        staged.unlink()
        raise Refused(f"the backup's ops store does not check out ({ok}; counts {facts['counts']})",
                      "nothing was restored; use another backup")
    return staged
