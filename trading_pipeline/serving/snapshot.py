"""Reading the serving snapshot: open the published generation read-only, list its tables, read its
metadata. :mod:`trading_pipeline.serving.publish` writes the generations.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

SNAPSHOT_NAME = "serving.duckdb"


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _tables_in(con: duckdb.DuckDBPyConnection, db: str) -> set[str]:
    rows = con.sql(
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE database_name = ? "
        "UNION SELECT schema_name || '.' || view_name FROM duckdb_views() "
        "WHERE database_name = ? AND NOT internal",
        params=[db, db],
    ).fetchall()
    return {r[0] for r in rows}


def snapshot_info(path: Path | str) -> dict | None:
    """The ``snapshot_meta`` row of a snapshot file (opened read-only), or None."""
    path = Path(path)
    if not path.exists():
        return None
    con = duckdb.connect()  # not connect(path): DuckDB's per-process instance cache may be stale
    try:
        con.execute(f"ATTACH {_lit(str(path))} AS snap (READ_ONLY)")
        cols = con.sql("SELECT * FROM snap.main.snapshot_meta").columns
        row = con.sql("SELECT * FROM snap.main.snapshot_meta").fetchall()
        return dict(zip(cols, row[0], strict=True)) if row else None
    finally:
        con.close()


class NoSnapshot(FileNotFoundError):
    """No serving snapshot has been published in this home yet."""


def open_snapshot(serving_dir: Path | str, *, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """A connection to the published snapshot, attached read-only as ``serving`` and made the
    default catalog, so ``raw.bars_daily`` or ``marts.signals`` resolve as in the warehouse.

    The snapshot file is replaced (``os.replace``), never written in place: this connection
    keeps reading the generation it opened, and no writer of the warehouse ever waits on it.
    Attached into an in-memory connection, not ``duckdb.connect(path)``: DuckDB's per-process
    instance cache could hand back a stale generation.
    """
    path = Path(serving_dir) / SNAPSHOT_NAME
    if not path.exists():
        raise NoSnapshot(f"no published snapshot at {path}")
    con = duckdb.connect(config={"memory_limit": memory_limit} if memory_limit else {})
    try:
        con.execute(f"ATTACH {_lit(str(path))} AS serving (READ_ONLY)")
        con.execute("USE serving")
    except BaseException:
        con.close()
        raise
    return con


def snapshot_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    """``schema.table`` of every table in the snapshot opened by :func:`open_snapshot`."""
    return _tables_in(con, "serving")


def stored_labels(serving_dir: Path | str) -> list[str]:
    """The ``source`` labels of the stored bars, from the published snapshot (never the
    warehouse file: readers must not hold its lock); [] when there is none."""
    try:
        con = open_snapshot(serving_dir)
    except (FileNotFoundError, OSError):
        return []
    try:
        have = snapshot_tables(con)
        parts = [f"SELECT DISTINCT source FROM {t}" for t in ("raw.bars_daily", "raw.bars_intraday") if t in have]
        return [r[0] for r in con.sql(" UNION ".join(parts)).fetchall()] if parts else []
    finally:
        con.close()
