"""The warehouse's part of a backup: the DuckLake catalog (SQLite by the online backup API,
Postgres by pg_dump in an exported snapshot) and every data file the copied catalog references.

Lake data files are immutable and deleted only after no retained snapshot references them (and
a grace period), so copying the files the *copied* catalog lists, after copying it, is
consistent. An object-store data path is refused: nothing here can read the bucket."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trading_pipeline.backup.files import discard, sqlite_copy
from trading_pipeline.backup.manifest import (
    BAR_TABLES,
    CATALOG,
    CATALOG_PGDUMP,
    DATA,
    BackupError,
    Refused,
    Step,
)
from trading_pipeline.backup.postgres import conninfo_env, pg_binary, run
from trading_pipeline.settings import Settings


def lake_or_none(settings: Settings):
    """The home's lake (SQLite or Postgres catalog); None when there is no lake yet; a clear
    error for what a backup does not cover."""
    from trading_pipeline.marketdata import warehouse as wh

    path = settings.warehouse_path
    if not wh.is_lake(path):
        raise BackupError(f"the warehouse {path} is a {wh.describe(path)}, not a DuckLake",
                          "move it into the lake first: `trading warehouse migrate`")
    lk = wh.lake(path)
    if lk.catalog_type not in ("sqlite", "postgres"):
        raise BackupError(f"the lake's catalog is {lk.catalog_type}: backups cover a SQLite or Postgres catalog",
                          "move the lake to a SQLite or Postgres catalog (TRADING_WAREHOUSE)")
    if lk.catalog_type == "sqlite":
        return lk if lk.exists() else None
    with connect_catalog(lk.catalog) as con:
        made = con.execute("SELECT to_regclass('ducklake_metadata')").fetchone()[0]
    return lk if made else None


def connect_catalog(conninfo: str, **kw):
    import psycopg

    return psycopg.connect(conninfo, **kw)


def catalog_facts(query: Callable[[str], list[tuple]]) -> dict[str, Any]:
    """The data path, DuckLake catalog version, newest snapshot and every file the catalog
    references (paths relative to the data path), read through ``query`` (SQLite or Postgres)."""
    meta = dict(query("SELECT key, value FROM ducklake_metadata WHERE scope IS NULL OR scope = ''"))
    snapshot = query("SELECT max(snapshot_id) FROM ducklake_snapshot")[0][0]
    schemas = {r[0]: (r[1], r[2]) for r in query("SELECT schema_id, path, path_is_relative FROM ducklake_schema")}
    tables = {r[0]: (r[1], r[2], r[3]) for r in query("SELECT table_id, schema_id, path, path_is_relative FROM ducklake_table")}
    files = query("SELECT table_id, path, path_is_relative FROM ducklake_data_file UNION "
                  "SELECT table_id, path, path_is_relative FROM ducklake_delete_file")
    data_path = meta.get("data_path", "")
    if "://" in data_path:
        raise BackupError(f"the lake's data path is {data_path}: an object store, which this backup does not copy",
                          "keep the bucket's versioning (or replication) on and back the catalog up with your "
                          "database's backups; see docs/operations.md \"Backups\"")
    rel = []
    for table_id, path, relative in files:
        if not relative:
            try:
                rel.append(str(Path(path).relative_to(data_path)))
            except ValueError:
                raise BackupError(f"the lake references {path}, outside its data path {data_path}") from None
            continue
        parts = [path]
        if table_id in tables:
            schema_id, tpath, trel = tables[table_id]
            parts.insert(0, tpath or "")
            if trel and schema_id in schemas and schemas[schema_id][1]:
                parts.insert(0, schemas[schema_id][0] or "")
        rel.append("".join(parts))
    return {"data_path": data_path, "catalog_version": meta.get("version"), "snapshot_id": snapshot,
            "files": sorted(set(rel))}


def sqlite_query(db: Path) -> Callable[[str], list[tuple]]:
    def query(sql: str) -> list[tuple]:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    return query


def bar_counts(location: str, *, snapshot: int | None = None) -> dict[str, int]:
    """Rows of the bar tables in a lake (at ``snapshot``), read-only."""
    from trading_pipeline.marketdata import extensions
    from trading_pipeline.marketdata import warehouse as wh

    extensions.require("ducklake")
    extensions.require(wh.Lake.parse(location).catalog_type)
    con = extensions.connect(config={})
    try:
        opts = ["READ_ONLY"] + ([f"SNAPSHOT_VERSION {int(snapshot)}"] if snapshot is not None else [])
        con.execute(f"ATTACH {wh.sql_literal(location)} AS bk ({', '.join(opts)})")
        have = {r[0] for r in con.sql("SELECT schema_name || '.' || table_name FROM duckdb_tables() "
                                      "WHERE database_name = 'bk'").fetchall()}
        return {t: (con.sql(f"SELECT count(*) FROM bk.{t}").fetchone()[0] if t in have else 0) for t in BAR_TABLES}
    finally:
        con.close()


def back_up_lake(settings: Settings, out: Path, step: Step) -> dict[str, Any] | None:
    """SQLite catalog: the online backup API, then the files the copy references. Postgres
    catalog: pg_dump in an exported snapshot, the file list read in that same snapshot."""
    lk = lake_or_none(settings)
    if lk is None:
        return None
    if lk.catalog_type == "sqlite":
        sqlite_copy(lk.catalog_file, out / CATALOG)
        facts = catalog_facts(sqlite_query(out / CATALOG))
        catalog = CATALOG
    else:
        import psycopg

        catalog = CATALOG_PGDUMP
        (out / catalog).parent.mkdir(parents=True, exist_ok=True)
        with connect_catalog(lk.catalog) as con:
            con.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            snap = con.execute("SELECT pg_export_snapshot()").fetchone()[0]
            facts = catalog_facts(lambda sql: con.execute(sql).fetchall())
            run([pg_binary("pg_dump"), "-Fc", "--no-owner", "--no-privileges", f"--snapshot={snap}",
                  "-f", str(out / catalog)], conninfo_env(lk.catalog), "pg_dump of the lake catalog")
    data = Path(facts["data_path"])
    for i, rel in enumerate(facts["files"], 1):
        src, dst = data / rel, out / DATA / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(src, dst)
        except FileNotFoundError:
            raise BackupError(f"the lake's file {src} went away during the backup (a compaction?)",
                              "run the backup again") from None
        if i % 50 == 0:
            step(f"copied {i}/{len(facts['files'])} lake files")
    counts = bar_counts(lk.location, snapshot=facts["snapshot_id"])
    return {"kind": "ducklake", "catalog_type": lk.catalog_type, "catalog": catalog, "data": DATA,
            "catalog_version": facts["catalog_version"], "snapshot_id": facts["snapshot_id"],
            "data_path": facts["data_path"], "data_files": len(facts["files"]), "counts": counts}


def restore_data_path(settings: Settings, lk: Any, manifest: dict[str, Any]) -> Path:
    """Where the restored lake's files go: the data path the home's lake has now; for a home
    without a lake, data/ beside a SQLite catalog, else TRADING_WAREHOUSE_DATA_PATH, else the
    backed-up lake's."""
    found = None
    if lk.catalog_type == "sqlite" and lk.exists():
        try:
            found = sqlite_query(lk.catalog_file)("SELECT value FROM ducklake_metadata WHERE key = 'data_path'")
        except sqlite3.Error:
            found = None
    elif lk.catalog_type == "postgres" and lake_or_none(settings) is not None:
        with connect_catalog(lk.catalog) as con:
            found = con.execute("SELECT value FROM ducklake_metadata WHERE key = 'data_path'").fetchall()
    if found and found[0][0]:
        path = found[0][0]
    else:
        path = lk.default_data_path() or settings.warehouse_data_path or manifest["warehouse"]["data_path"]
    if "://" in path:
        raise Refused(f"this home's lake keeps its data at {path}, an object store", "restore onto a lake with a "
                      "local data path (TRADING_WAREHOUSE_DATA_PATH); see docs/operations.md \"Backups\"")
    return Path(path.rstrip("/"))


def stage_lake(settings: Settings, backup: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The lake's files staged beside the home's data folder and, for a SQLite catalog, the
    catalog beside the home's, opened once to prove it reads and holds the manifest's bars
    (a Postgres catalog is checked after its one-transaction restore)."""
    from trading_pipeline.marketdata import warehouse as wh

    if manifest.get("warehouse") is None:
        return None
    lk = wh.lake(settings.warehouse_path)
    data = restore_data_path(settings, lk, manifest)
    data.parent.mkdir(parents=True, exist_ok=True)
    staged_data = data.parent / f".{data.name}.restore-{os.getpid()}"
    shutil.rmtree(staged_data, ignore_errors=True)
    shutil.copytree(backup / DATA, staged_data) if (backup / DATA).exists() else staged_data.mkdir(parents=True)
    plan = {"lake": lk, "data": data, "staged_data": staged_data, "staged_catalog": None}
    if lk.catalog_type != "sqlite":
        return plan
    catalog = lk.catalog_file
    catalog.parent.mkdir(parents=True, exist_ok=True)
    staged_catalog = catalog.parent / f".{catalog.name}.restore-{os.getpid()}"
    shutil.copyfile(backup / CATALOG, staged_catalog)
    plan["staged_catalog"] = staged_catalog
    expect = expected_bars(manifest)
    try:
        set_data_path(staged_catalog, staged_data)  # read the staged copy where it is...
        got = bar_counts(f"ducklake:sqlite:{staged_catalog}")
        set_data_path(staged_catalog, data)  # ...then point it where it goes
    except Exception as exc:  # a catalog this DuckLake cannot read (a newer version...)
        discard(staged_catalog, staged_data)
        raise Refused(f"the backup's lake catalog (DuckLake {manifest['warehouse'].get('catalog_version')}) does not "
                      f"open here: {str(exc).splitlines()[0]}", "nothing was restored; a backup made by a newer "
                      "release restores with that release") from None
    if got != expect:
        discard(staged_catalog, staged_data)
        raise Refused(f"the backup's lake holds {got}, the manifest says {expect}", "nothing was restored; use another backup")
    return plan


def expected_bars(manifest: dict[str, Any]) -> dict[str, int]:
    return {"raw.bars_daily": manifest["counts"]["bars_daily"], "raw.bars_intraday": manifest["counts"]["bars_intraday"]}


def set_data_path(catalog: Path, data: Path) -> None:
    con = sqlite3.connect(str(catalog))
    try:
        with con:
            con.execute("UPDATE ducklake_metadata SET value = ? WHERE key = 'data_path'", [f"{data}/"])
    finally:
        con.close()
