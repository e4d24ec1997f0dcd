"""Reading the serving snapshot: open the published generation read-only, list its tables, read its
metadata. :mod:`trading_pipeline.serving.publish` writes the generations.

Two kinds, one interface:

* a DuckLake warehouse (the default): a published snapshot is a lake snapshot id, recorded in
  the lake (``main.snapshot_meta``, ``main.feed``) and in the pointer file
  ``serving_dir/published.json`` (replaced atomically; readers watch its inode). Readers
  attach the lake read-only pinned at that id (``SNAPSHOT_VERSION``) as ``lake``, the name
  dbt's views use: nothing is copied, and no reader waits on a writer;
* a DuckDB-file warehouse (before DuckLake): a copy ``serving_dir/serving.duckdb``, replaced
  by ``os.replace``.

Either way ``snapshot_meta`` (newest row last: ``ORDER BY sequence DESC LIMIT 1``), ``feed``
and the warehouse's ``raw``/``marts``/``ops`` tables resolve unqualified.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from trading_pipeline.marketdata.warehouse import sql_literal

SNAPSHOT_NAME = "serving.duckdb"
POINTER_NAME = "published.json"
LAKE_CATALOG = "lake"  # the alias every lake reader uses (dbt's views name it)
META_SQL = "SELECT * FROM main.snapshot_meta ORDER BY sequence DESC LIMIT 1"


def serving_dir_of(path: Path | str) -> Path:
    """The serving folder, given it or a file in it (``serving.duckdb``, ``published.json``)."""
    path = Path(path)
    return path.parent if path.name in (SNAPSHOT_NAME, POINTER_NAME) else path


def read_pointer(serving_dir: Path | str) -> dict | None:
    """The lake pointer (``published.json``): sequence, snapshot_id, warehouse; None if absent."""
    try:
        return json.loads((serving_dir_of(serving_dir) / POINTER_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise NoSnapshot(f"unreadable serving pointer {serving_dir_of(serving_dir) / POINTER_NAME}: {exc}") from exc


def watched_path(serving_dir: Path | str) -> Path:
    """The file whose replacement means a new snapshot: the pointer when there is one."""
    d = serving_dir_of(serving_dir)
    pointer = d / POINTER_NAME
    return pointer if pointer.exists() else d / SNAPSHOT_NAME


def attach_published(con: duckdb.DuckDBPyConnection, serving_dir: Path | str, alias: str) -> str:
    """Attach the published snapshot to ``con`` read-only; returns the catalog to ``USE``.

    A lake pointer attaches the lake at the pinned snapshot as ``lake``; otherwise the
    ``serving.duckdb`` copy as ``alias``. Raises :class:`NoSnapshot` when nothing is published.
    """
    d = serving_dir_of(serving_dir)
    pointer = read_pointer(d)
    if pointer is not None:
        from trading_pipeline.marketdata import warehouse as wh

        con.execute(wh.attach_statement(pointer["warehouse"], alias=LAKE_CATALOG,
                                        snapshot_version=int(pointer["snapshot_id"])))
        return LAKE_CATALOG
    path = d / SNAPSHOT_NAME
    if not path.exists():
        raise NoSnapshot(f"no published snapshot in {d}")
    con.execute(f"ATTACH {_lit(str(path))} AS {alias} (READ_ONLY)")
    return alias


_lit = sql_literal  # one quoting rule for every literal we build (publish uses it too)


def _tables_in(con: duckdb.DuckDBPyConnection, db: str) -> set[str]:
    rows = con.sql(
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE database_name = ? "
        "UNION SELECT schema_name || '.' || view_name FROM duckdb_views() "
        "WHERE database_name = ? AND NOT internal",
        params=[db, db],
    ).fetchall()
    return {r[0] for r in rows}


class NoSnapshot(FileNotFoundError):
    """No serving snapshot has been published in this home yet."""


def snapshot_info(path: Path | str) -> dict | None:
    """The newest ``snapshot_meta`` row of the published snapshot (a serving folder, its
    pointer or a ``serving.duckdb`` file), or None when there is none."""
    try:
        con = open_snapshot(path)
    except FileNotFoundError:
        return None
    try:
        rel = con.sql(META_SQL)
        row = rel.fetchall()
        return dict(zip(rel.columns, row[0], strict=True)) if row else None
    finally:
        con.close()


def open_snapshot(serving_dir: Path | str, *, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """A connection to the published snapshot, attached read-only as ``serving`` and made the
    default catalog, so ``raw.bars_daily`` or ``marts.signals`` resolve as in the warehouse.

    The snapshot file is replaced (``os.replace``), never written in place: this connection
    keeps reading the generation it opened, and no writer of the warehouse ever waits on it.
    Attached into an in-memory connection, not ``duckdb.connect(path)``: DuckDB's per-process
    instance cache could hand back a stale generation.
    """
    d = serving_dir_of(serving_dir)
    if read_pointer(d) is None and not (d / SNAPSHOT_NAME).exists():
        raise NoSnapshot(f"no published snapshot in {d}")
    from trading_pipeline.marketdata import extensions

    con = extensions.connect(config={"memory_limit": memory_limit} if memory_limit else {})
    try:
        catalog = attach_published(con, d, "serving")
        con.execute(f"USE {catalog}")
    except BaseException:
        con.close()
        raise
    return con


def snapshot_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    """``schema.table`` of every table in the snapshot opened by :func:`open_snapshot`."""
    return _tables_in(con, con.sql("SELECT current_database()").fetchall()[0][0])


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
