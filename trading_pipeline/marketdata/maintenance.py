"""Lake maintenance: fold many small commits into few files and drop history past retention.

Every load, scan and publish is a DuckLake snapshot, and each adds files (or rows inlined in
the catalog: DuckLake keeps inserts of a few rows in the catalog database itself). Left
alone, a lake holds thousands of tiny Parquet files and snapshots, and every query opens
them all. :func:`compact` runs DuckLake's own maintenance functions, in this order:

1. ``ducklake_flush_inlined_data``: rows inlined in the catalog go to Parquet files;
2. ``ducklake_rewrite_data_files``: files with many deleted rows (re-loaded sessions) are
   rewritten without them;
3. ``ducklake_merge_adjacent_files``: small files of a table are merged into few;
4. ``ducklake_expire_snapshots``: snapshots older than the retention are forgotten, except
   what the serving layer still reads (below) and the current snapshot;
5. ``ducklake_cleanup_old_files``: files no retained snapshot reads any more (merged away,
   or only expired snapshots had them) are deleted once they have waited :data:`FILE_GRACE`
   (a query that began before the merge may still be reading them); younger ones go at the
   next run;
6. ``ducklake_delete_orphaned_files``: files no snapshot ever committed (a writer that died
   mid-commit), older than :data:`ORPHAN_GRACE` so an open transaction's files are safe.

Steps 1-3 keep time travel intact: a reader pinned to a retained snapshot reads the same
rows after them. Step 4 ends time travel to the expired snapshots only.

Published snapshots are kept whatever their age: the serving layer records each publish as
a row of ``serving.publishes`` (``snapshot_id``, and ``data_snapshot`` when it has one; see
:data:`PUBLISHED`), and the API reads and diffs from the newest of them, so no snapshot from
the oldest of those ids on is expired. The table is optional (a lake that never published has
none).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.marketdata.warehouse import sql_literal as _lit

#: a data file with at least this fraction of its rows deleted is rewritten without them
DELETE_THRESHOLD = 0.3
#: files no retained snapshot reads are deleted once they have waited this long for deletion
#: (a query that listed them before a merge may still be reading them)
FILE_GRACE = timedelta(minutes=10)
#: files in the data path that no snapshot references are deleted once older than this
#: (younger ones may belong to a transaction that has not committed yet)
ORPHAN_GRACE = timedelta(hours=1)
#: where the serving layer records what it published: (schema, table, snapshot columns, the
#: first ordering the rows); the newest row's ids are the floor nothing at or above is expired.
#: ``main.snapshot_meta`` is where serving/publish.py's lake publish records the snapshot it
#: served (``data_snapshot``) as written today; ``serving.publishes`` is the publish log's table
PUBLISHED = (("serving", "publishes", ("snapshot_id", "data_snapshot")),
             ("main", "snapshot_meta", ("data_snapshot",)))


class MaintenanceError(RuntimeError):
    """The warehouse cannot be compacted (not a lake, or no lake yet)."""


def compact(
    con_or_path: duckdb.DuckDBPyConnection | Path | str,
    *,
    keep_snapshots_days: float,
    delete_threshold: float = DELETE_THRESHOLD,
    file_grace: timedelta = FILE_GRACE,
    orphan_grace: timedelta = ORPHAN_GRACE,
    now: datetime | None = None,
) -> dict:
    """Compact the lake (a warehouse location, or a connection with the lake as its current
    catalog, as ``warehouse.connect`` opens it) and return what it did, as plain figures:
    ``before``/``after`` (:func:`figures`), what each step did, the snapshots kept and why.

    ``keep_snapshots_days``: snapshots younger than this stay (time travel back that far);
    0 keeps only the current snapshot and the published ones. ``file_grace``: how long a file
    nothing reads any more waits before it is deleted (0: at once). ``now``: the time the
    retention and the graces count back from (default: after the merge steps).
    """
    if keep_snapshots_days < 0:
        raise ValueError(f"keep_snapshots_days must be >= 0, got {keep_snapshots_days}")
    if isinstance(con_or_path, duckdb.DuckDBPyConnection):
        return _compact(con_or_path, keep_snapshots_days, delete_threshold, file_grace, orphan_grace, now)
    if not wh.is_lake(con_or_path):
        raise MaintenanceError(
            f"{wh.location(con_or_path)} is a {wh.describe(con_or_path)}: compaction is for a DuckLake "
            "warehouse (a DuckDB file keeps its own storage; `trading warehouse migrate` moves one into a lake)"
        )
    if not wh.exists(con_or_path):
        raise MaintenanceError(f"no warehouse at {wh.location(con_or_path)}: nothing to compact")
    con = wh.connect(con_or_path)
    try:
        return _compact(con, keep_snapshots_days, delete_threshold, file_grace, orphan_grace, now)
    finally:
        con.close()


def _compact(con: duckdb.DuckDBPyConnection, keep_days: float, delete_threshold: float,
             file_grace: timedelta, orphan_grace: timedelta, now: datetime | None) -> dict:
    catalog = _catalog(con)
    t0 = time.monotonic()
    before = figures(con, catalog)
    lit = _lit(catalog)

    flushed = _sum(con.sql(f"CALL ducklake_flush_inlined_data({lit})").fetchall(), -1)
    rewritten = _sum(con.sql(f"CALL ducklake_rewrite_data_files({lit}, delete_threshold => ?)",
                             params=[delete_threshold]).fetchall(), -2)
    merged = _sum(con.sql(f"CALL ducklake_merge_adjacent_files({lit})").fetchall(), -2)

    # measured from now, after the steps above: their own commits are as old as the rest
    clock = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    cutoff = clock() - timedelta(days=keep_days)
    published = published_snapshot(con, catalog)
    current = wh.snapshot_id(con)
    floor = min(s for s in (current, published) if s is not None)
    expire = [sid for (sid,) in con.sql(
        f"SELECT snapshot_id FROM ducklake_snapshots({lit}) WHERE snapshot_time < ? AND snapshot_id < ? "
        "ORDER BY snapshot_id", params=[cutoff, floor]).fetchall()]
    if expire:
        con.sql(f"CALL ducklake_expire_snapshots({lit}, versions => ?)", params=[expire]).fetchall()
    deleted = _delete_replaced_files(con, catalog, clock() - file_grace)
    orphans = len(con.sql(f"CALL ducklake_delete_orphaned_files({lit}, older_than => ?)",
                          params=[clock() - orphan_grace]).fetchall())
    after = figures(con, catalog)
    return {
        "catalog": catalog,
        "before": before,
        "after": after,
        "inlined_rows_flushed": flushed,
        "files_rewritten": rewritten,
        "files_merged": merged,
        "snapshots_expired": len(expire),
        "files_deleted": deleted,
        "orphans_deleted": orphans,
        "keep_snapshots_days": keep_days,
        "file_grace_seconds": file_grace.total_seconds(),
        "kept_since": cutoff.isoformat(),
        "published_snapshot": published,
        "current_snapshot": current,
        "seconds": round(time.monotonic() - t0, 3),
    }


def _delete_replaced_files(con: duckdb.DuckDBPyConnection, catalog: str, before: datetime) -> int:
    """``ducklake_cleanup_old_files`` for the files scheduled for deletion before ``before``.

    DuckLake 1.5.5 on a SQLite catalog compares ``older_than`` with the stored schedule time
    as text, so it only tells days apart: any file scheduled on ``older_than``'s date counts
    as older, even one scheduled a second ago. So each cut-off is tried as a dry run first and
    used only if it picks no file scheduled after ``before`` (the catalog's own times, read
    here as timestamps): ``before`` itself (right on Postgres, and when everything waiting is
    old enough), else the end of the day before ``before``'s date (right either way). The
    rest waits for a later run."""
    lit, meta = _lit(catalog), _q(f"__ducklake_metadata_{catalog}")
    waiting = con.sql(f"SELECT path, schedule_start::TIMESTAMPTZ FROM {meta}.ducklake_files_scheduled_for_deletion"
                      ).fetchall()
    safe = {Path(path).name for path, at in waiting if at is not None and at < before}
    if not safe:
        return 0
    day_before = datetime.combine(before.astimezone(UTC).date(), datetime.min.time(), UTC) - timedelta(microseconds=1)
    for cutoff in (before, day_before):
        picked = {Path(p).name for (p,) in con.sql(
            f"CALL ducklake_cleanup_old_files({lit}, dry_run => true, older_than => ?)", params=[cutoff]).fetchall()}
        if picked and picked <= safe:
            return len(con.sql(f"CALL ducklake_cleanup_old_files({lit}, older_than => ?)", params=[cutoff]).fetchall())
    return 0


def figures(con: duckdb.DuckDBPyConnection, catalog: str | None = None) -> dict:
    """How big the lake's history is: ``snapshots``; ``files`` and ``bytes``, the data and
    delete files the retained snapshots read; ``data_files``/``delete_files``, those the
    current snapshot reads; ``awaiting_deletion``, files nothing reads any more, not deleted
    yet; ``inlined_rows`` kept in the catalog database; and, for a local data path,
    ``disk_files``/``disk_bytes`` under it (all of the above, and any orphans)."""
    catalog = catalog or _catalog(con)
    lit, meta = _lit(catalog), _q(f"__ducklake_metadata_{catalog}")
    snapshots = con.sql(f"SELECT count(*) FROM ducklake_snapshots({lit})").fetchall()[0][0]
    data_files, delete_files = con.sql(
        f"SELECT coalesce(sum(file_count), 0), coalesce(sum(delete_file_count), 0) FROM ducklake_table_info({lit})"
    ).fetchall()[0]
    files, size = con.sql(
        f"""SELECT count(*), coalesce(sum(file_size_bytes), 0) FROM (
                SELECT file_size_bytes FROM {meta}.ducklake_data_file
                UNION ALL SELECT file_size_bytes FROM {meta}.ducklake_delete_file)"""
    ).fetchall()[0]
    scheduled = con.sql(f"SELECT count(*) FROM {meta}.ducklake_files_scheduled_for_deletion").fetchall()[0][0]
    inlined = 0
    for (table,) in con.sql(f"SELECT DISTINCT table_name FROM {meta}.ducklake_inlined_data_tables").fetchall():
        try:
            inlined += con.sql(f"SELECT count(*) FROM {meta}.{_q(table)}").fetchall()[0][0]
        except duckdb.Error:  # listed but not created yet (a table that never inlined a row)
            pass
    out = {"snapshots": int(snapshots), "files": int(files), "bytes": int(size),
           "data_files": int(data_files), "delete_files": int(delete_files), "awaiting_deletion": int(scheduled),
           "inlined_rows": int(inlined)}
    data_path = _data_path(con, catalog)
    if data_path is not None:
        n = nbytes = 0
        for root, _, names in os.walk(data_path):
            for name in names:
                n += 1
                nbytes += os.path.getsize(os.path.join(root, name))
        out.update(disk_files=n, disk_bytes=nbytes)
    return out


def published_snapshot(con: duckdb.DuckDBPyConnection, catalog: str | None = None) -> int | None:
    """The oldest snapshot the serving layer still needs: the smallest id recorded in the
    newest publish (:data:`PUBLISHED`), or None when nothing was published."""
    catalog = catalog or _catalog(con)
    cols = {(s, t): {c for (c,) in con.sql(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND schema_name = ? AND table_name = ?",
        params=[catalog, s, t]).fetchall()} for s, t, _ in PUBLISHED}
    ids: list[int] = []
    for schema, table, wanted in PUBLISHED:
        have = [c for c in wanted if c in cols[(schema, table)]]
        if not have:
            continue
        row = con.sql(
            f"SELECT {', '.join(_q(c) for c in have)} FROM {_q(catalog)}.{_q(schema)}.{_q(table)} "
            f"ORDER BY {_q(have[0])} DESC NULLS LAST LIMIT 1").fetchall()
        if row:
            ids.extend(int(v) for v in row[0] if v is not None)
    return min(ids) if ids else None


def _catalog(con: duckdb.DuckDBPyConnection) -> str:
    catalog = con.sql("SELECT current_database()").fetchall()[0][0]
    try:
        con.sql(f"SELECT 1 FROM ducklake_snapshots({_lit(catalog)}) LIMIT 0").fetchall()
    except duckdb.Error as exc:
        raise MaintenanceError(f"the connection's catalog {catalog!r} is not a DuckLake: {exc}") from None
    return catalog


def _data_path(con: duckdb.DuckDBPyConnection, catalog: str) -> Path | None:
    try:
        rows = con.sql(f"SELECT data_path FROM ducklake_settings({_lit(catalog)})").fetchall()
    except duckdb.Error:
        return None
    path = rows[0][0] if rows else None
    if not path or "://" in path:
        return None
    return Path(path) if Path(path).is_dir() else None


def _sum(rows: list[tuple], column: int) -> int:
    return int(sum(r[column] or 0 for r in rows))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


