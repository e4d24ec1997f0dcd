"""The serving snapshot: what the API reads instead of the warehouse (docs/decisions.md #1).

The warehouse has one writer (Dagster runs), and DuckDB lets no other process open a file a
writer holds, so after each build this module copies the tables the API needs into a NEW
DuckDB file, checkpoints and closes it, and ``os.replace``\\ s it onto
``serving_dir/serving.duckdb``. Readers (API workers) hold the old inode until they notice
the new one, so a query never sees a half-written snapshot and never waits on a pipeline run.

Each snapshot also carries:

* ``snapshot_meta``: one row - ``sequence`` (monotonic across publishes), ``published_at``,
  the feed's head and oldest ``seq``, and the source row counts (JSON);
* ``snapshot_tables``: one row per copied table with its row count;
* ``feed``: the items that are new since the previous snapshot (new bars per symbol, new
  signals, new alerts) with a ``seq`` that continues across snapshots, plus the previous
  snapshot's retained items, so a WebSocket client can resume from any ``seq`` in the window
  without gaps.

What counts as "new" is a key difference against the previous snapshot: bars by
(symbol, timeframe, ts), signals by (scan, symbol, timeframe, ts, kind), alerts by
``alert_id``. A table that first appears (no previous snapshot, or the mart did not exist
yet) is a baseline: bars produce no items (history is not news); signals and alerts produce
at most ``max_items_per_channel`` items (the newest).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from trading_pipeline import logs
from trading_pipeline.marketdata.bars import utcnow
from trading_pipeline.marketdata.retry import call_waiting_for_lock
from trading_pipeline.serving.snapshot import (
    POINTER_NAME,
    SNAPSHOT_NAME,
    _lit,
    _tables_in,
)

log = logs.get_logger(__name__)

STATE_NAME = "publish_state.json"
LOCK_NAME = ".publish.lock"
TMP_PREFIX = ".serving-"

# Copied when present in the warehouse; the order is the order of the copy.
TABLES: tuple[str, ...] = (
    "raw.symbols",
    "raw.bars_daily",
    "raw.bars_intraday",
    "marts.dim_symbols",
    "marts.indicators_daily",
    "marts.indicators_intraday",
    "marts.signals",
    "marts.scan_results",
    "marts.alerts",
    # for the CLI's readers (`trading sql`, `trading status`), which read this snapshot and
    # never the warehouse: rejected rows and the ops mirror are small
    "raw.bars_rejected",
    "ops.orders",
    "ops.order_events",
    "ops.fills",
    "ops.positions",
    "ops.accounts",
    "ops.risk_events",
    "ops.equity_marks",
    "ops.portfolio_daily",
)

# Sort keys on copy: rows of one symbol sit together, so DuckDB's zone maps prune per-symbol
# reads (GET /market-data/{symbol}) to a few row groups.
_SORT: dict[str, tuple[str, ...]] = {
    "raw.bars_daily": ("symbol", "timeframe", "ts"),
    "raw.bars_intraday": ("symbol", "timeframe", "ts"),
    "marts.indicators_daily": ("symbol", "ts"),
    "marts.indicators_intraday": ("symbol", "timeframe", "ts"),
    "marts.signals": ("session_date", "ts", "symbol"),
    "marts.alerts": ("session_date", "ts", "symbol"),
}

FEED_COLUMNS = """(
    seq          BIGINT    NOT NULL,
    channel      VARCHAR   NOT NULL,
    key          VARCHAR   NOT NULL,
    payload      VARCHAR   NOT NULL,
    published_at TIMESTAMP NOT NULL,
    snapshot     BIGINT    NOT NULL
)"""
FEED_DDL = "CREATE TABLE {db}.main.feed " + FEED_COLUMNS


@dataclass(frozen=True)
class PublishResult:
    path: Path
    sequence: int
    feed_head_seq: int
    new_items: int
    tables: dict[str, int]
    snapshot_id: int | None = None  # the lake snapshot readers pin (None: a copied file)
    data_snapshot: int | None = None  # the lake snapshot whose data it serves


def _utcnow() -> datetime:
    return utcnow()


def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


@contextmanager
def _publish_lock(serving_dir: Path) -> Iterator[None]:
    """Serialise publishers (sequence numbers must not fork)."""
    with open(serving_dir / LOCK_NAME, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_state(serving_dir: Path) -> dict:
    try:
        return json.loads((serving_dir / STATE_NAME).read_text())
    except (OSError, ValueError):
        return {}


def _write_state(serving_dir: Path, state: dict) -> None:
    tmp = serving_dir / f".{STATE_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, serving_dir / STATE_NAME)


def _columns(con: duckdb.DuckDBPyConnection, fq: str) -> dict[str, str]:
    return {r[0]: r[1] for r in con.sql(f"DESCRIBE SELECT * FROM {fq}").fetchall()}


def _fq(db: str, table: str) -> str:
    schema, name = table.split(".")
    return f"{_q(db)}.{_q(schema)}.{_q(name)}"


def _json_select(cols: dict[str, str], alias: str = "t") -> str:
    """``to_json`` of a row with NaN/inf floats as null (JSON has no NaN)."""
    parts = []
    for c, typ in cols.items():
        ref = f"{alias}.{_q(c)}"
        if typ in ("DOUBLE", "FLOAT", "REAL"):
            ref = f"CASE WHEN isnan({ref}) OR isinf({ref}) THEN NULL ELSE {ref} END"
        parts.append(f"{_lit(c)}, {ref}")
    return f"to_json(json_object({', '.join(parts)}))"


def _signal_key(cols: dict[str, str], alias: str) -> str:
    names = [c for c in ("scan", "symbol", "timeframe", "ts", "kind") if c in cols]
    return "concat_ws('|', " + ", ".join(f"CAST({alias}.{_q(c)} AS VARCHAR)" for c in names) + ")"


def _read_prev_meta(con: duckdb.DuckDBPyConnection, prev_db: str | None) -> tuple[int, int]:
    if prev_db is None:
        return 0, 0
    try:
        row = con.sql(
            f"SELECT max(sequence), max(feed_head_seq) FROM {_q(prev_db)}.main.snapshot_meta"
        ).fetchall()[0]
        return int(row[0] or 0), int(row[1] or 0)
    except duckdb.Error:
        return 0, 0


def _catalog_name(location: Path | str) -> str:
    """The catalog name dbt gives the warehouse: a file's stem, a MotherDuck database's name."""
    if isinstance(location, Path):
        return location.stem
    _, _, rest = location.partition(":")
    name = rest.split("?")[0]
    return name if name.isidentifier() else ""


def publish_snapshot(
    warehouse_path: Path | str,
    serving_dir: Path | str,
    con: duckdb.DuckDBPyConnection | None = None,
    *,
    feed_retention: int = 50_000,
    max_items_per_channel: int = 5_000,
    keep_generations: int = 0,
    lock_timeout: float = 30.0,
) -> Path:
    """Publish a new serving snapshot; returns the path of ``serving.duckdb``.

    ``con`` is an open connection to the warehouse (the caller's writer connection inside a
    Dagster asset): the copy goes through it, so no second open of a locked file is needed.
    Without it the warehouse is attached read-only (waiting up to ``lock_timeout`` seconds
    while another process holds its write lock). The connection is left as it was found
    (the snapshot databases are detached again).

    ``keep_generations`` > 0 keeps that many previous snapshots as ``serving.<seq>.duckdb``
    (for forensics); the default removes them.
    """
    return publish_snapshot_detailed(
        warehouse_path,
        serving_dir,
        con,
        feed_retention=feed_retention,
        max_items_per_channel=max_items_per_channel,
        keep_generations=keep_generations,
        lock_timeout=lock_timeout,
    ).path


def publish_snapshot_detailed(
    warehouse_path: Path | str,
    serving_dir: Path | str,
    con: duckdb.DuckDBPyConnection | None = None,
    *,
    feed_retention: int = 50_000,
    max_items_per_channel: int = 5_000,
    keep_generations: int = 0,
    lock_timeout: float = 30.0,
) -> PublishResult:
    """:func:`publish_snapshot` with the details (sequence, feed head, counts).

    Without ``con``, a warehouse that is not a file (``md:``, ``ducklake:``) is attached by
    its location unchanged; an in-memory one cannot be (it is private to its connection).
    """
    from trading_pipeline.marketdata import warehouse as wh
    warehouse_path = wh.location(warehouse_path)
    serving_dir = Path(serving_dir)
    serving_dir.mkdir(parents=True, exist_ok=True)
    if wh.is_lake(warehouse_path):
        return _publish_lake(str(warehouse_path), serving_dir, con, feed_retention=feed_retention,
                             max_items_per_channel=max_items_per_channel)
    target = serving_dir / SNAPSHOT_NAME
    t0 = time.monotonic()
    with _publish_lock(serving_dir):
        _cleanup_tmp(serving_dir)
        own = con is None
        if own:
            if wh.kind(warehouse_path) == "memory":
                raise wh.WarehouseLocationError(
                    f"cannot publish from the warehouse {warehouse_path!r} ({wh.describe(warehouse_path)}) "
                    "without its connection: pass con="
                )
            if not wh.exists(warehouse_path):
                raise FileNotFoundError(f"no warehouse at {warehouse_path}")
            con = duckdb.connect()
            src_db = "wh_" + uuid.uuid4().hex[:8]
            # dbt views name their catalog by the file stem ("warehouse"; "trading" for
            # md:trading), so attach under it when it is free; else a unique alias (views then
            # may not bind).
            stem = _catalog_name(warehouse_path)
            taken = {r[0] for r in con.sql("SELECT database_name FROM duckdb_databases()").fetchall()}
            if stem and stem not in taken:
                src_db = stem
            try:  # another process may hold the write lock for a moment
                call_waiting_for_lock(
                    lambda: con.execute(f"ATTACH {_lit(str(warehouse_path))} AS {_q(src_db)} (READ_ONLY)"),
                    lock_timeout,
                )
            except duckdb.Error as exc:
                con.close()
                if isinstance(warehouse_path, str):  # md:, ducklake:: say what it needs
                    raise wh.open_error(warehouse_path, exc) from None
                raise
        else:
            src_db = con.sql("SELECT current_database()").fetchall()[0][0]

        tag = uuid.uuid4().hex[:8]
        new_db, prev_db = f"_serving_new_{tag}", f"_serving_prev_{tag}"
        tmp_path = serving_dir / f"{TMP_PREFIX}{os.getpid()}-{tag}.duckdb.tmp"
        attached_prev = False
        try:
            if target.exists():
                try:
                    con.execute(f"ATTACH {_lit(str(target))} AS {_q(prev_db)} (READ_ONLY)")
                    attached_prev = True
                except duckdb.Error as exc:
                    log.warning("serving_prev_unreadable", path=target, error=exc)
            prev_seq, prev_head = _read_prev_meta(con, prev_db if attached_prev else None)
            state = _read_state(serving_dir)
            prev_seq = max(prev_seq, int(state.get("sequence", 0)))
            prev_head = max(prev_head, int(state.get("feed_head_seq", 0)))
            sequence = prev_seq + 1
            now = _utcnow()

            con.execute(f"ATTACH {_lit(str(tmp_path))} AS {_q(new_db)}")
            src_tables = _tables_in(con, src_db)
            prev_tables = _tables_in(con, prev_db) if attached_prev else set()
            counts: dict[str, int] = {}
            for schema in ("raw", "marts", "ops"):
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(new_db)}.{_q(schema)}")
            for table in TABLES:
                if table not in src_tables:
                    continue
                order = _SORT.get(table)
                src = _fq(src_db, table)
                try:
                    cols = _columns(con, src)
                    order_sql = ""
                    if order and all(c in cols for c in order):
                        order_sql = " ORDER BY " + ", ".join(_q(c) for c in order)
                    con.execute(f"CREATE TABLE {_fq(new_db, table)} AS SELECT * FROM {src}{order_sql}")
                except duckdb.Error as exc:  # e.g. a view whose catalog does not bind here
                    log.warning("serving_table_skipped", table=table, error=exc)
                    con.execute(f"DROP TABLE IF EXISTS {_fq(new_db, table)}")
                    continue
                counts[table] = con.sql(f"SELECT count(*) FROM {_fq(new_db, table)}").fetchall()[0][0]

            bar_tables = [t for t in ("raw.bars_daily", "raw.bars_intraday") if t in counts]
            if bar_tables:  # the warehouse's raw.bars view, for the CLI's readers
                con.execute(f"CREATE VIEW {_fq(new_db, 'raw.bars')} AS "
                            + " UNION ALL ".join(f"SELECT * FROM {t}" for t in bar_tables))
            new_items = _build_feed(
                con, new_db, prev_db if attached_prev else None, counts, prev_tables,
                prev_head=prev_head, sequence=sequence, now=now,
                retention=feed_retention, max_items=max_items_per_channel,
            )
            head, oldest = con.sql(
                f"SELECT coalesce(max(seq), ?), coalesce(min(seq), ?) FROM {_q(new_db)}.main.feed",
                params=[prev_head, prev_head + 1],
            ).fetchall()[0]
            con.execute(
                f"""CREATE TABLE {_q(new_db)}.main.snapshot_meta AS SELECT
                    ?::BIGINT AS sequence, ?::TIMESTAMP AS published_at, ?::BIGINT AS feed_head_seq,
                    ?::BIGINT AS feed_oldest_seq, ?::BIGINT AS new_items, ?::VARCHAR AS source_rows,
                    ?::VARCHAR AS warehouse""",
                [sequence, now, head, oldest, new_items, json.dumps(counts), str(warehouse_path)],
            )
            con.execute(f"CREATE TABLE {_q(new_db)}.main.snapshot_tables (name VARCHAR, rows BIGINT)")
            if counts:
                con.executemany(
                    f"INSERT INTO {_q(new_db)}.main.snapshot_tables VALUES (?, ?)", list(counts.items())
                )
            con.execute(f"CHECKPOINT {_q(new_db)}")
        except BaseException:
            _detach(con, new_db)
            _unlink_db(tmp_path)
            raise
        finally:
            if attached_prev:
                _detach(con, prev_db)
            if own:
                con.close()
        if not own:
            _detach(con, new_db)
        wal = Path(str(tmp_path) + ".wal")
        if wal.exists():  # never expected after CHECKPOINT + DETACH; a stale one would be wrong
            wal.unlink()
        if keep_generations > 0 and target.exists():
            keep = serving_dir / f"serving.{prev_seq:08d}.duckdb"
            if not keep.exists():
                os.link(target, keep)
        os.replace(tmp_path, target)
        _fsync_dir(serving_dir)
        _write_state(serving_dir, {"sequence": sequence, "feed_head_seq": int(head), "published_at": now.isoformat()})
        _prune_generations(serving_dir, keep_generations)
    log.info("serving_published", sequence=sequence, feed_head_seq=head, new_items=new_items, tables=len(counts),
             duration_ms=round((time.monotonic() - t0) * 1000))
    return PublishResult(target, sequence, int(head), int(new_items), counts)


def _build_feed(
    con: duckdb.DuckDBPyConnection,
    new_db: str,
    prev_db: str | None,
    counts: dict[str, int],
    prev_tables: set[str],
    *,
    prev_head: int,
    sequence: int,
    now: datetime,
    retention: int,
    max_items: int,
) -> int:
    """Create ``feed`` in the new snapshot: retained old items plus the new ones."""
    con.execute(FEED_DDL.format(db=_q(new_db)))
    if prev_db is not None and "main.feed" in prev_tables:
        con.execute(
            f"""INSERT INTO {_q(new_db)}.main.feed
                SELECT seq, channel, key, payload, published_at, snapshot FROM {_q(prev_db)}.main.feed
                WHERE seq > ? ORDER BY seq""",
            [prev_head - retention],
        )
    parts: list[str] = []  # each: SELECT ord, ts, channel, key, payload
    # Bars: only when the previous snapshot had the table (history is not news).
    for i, table in enumerate(("raw.bars_daily", "raw.bars_intraday")):
        if table not in counts or prev_db is None or table not in prev_tables:
            continue
        cols = _columns(con, _fq(new_db, table))
        cols = {c: t for c, t in cols.items() if c not in ("source", "ingested_at")}
        parts.append(
            f"""SELECT {i} AS ord, t.ts AS ts, 'bars:' || t.symbol AS channel,
                       concat_ws('|', t.symbol, t.timeframe, strftime(t.ts, '%Y-%m-%dT%H:%M:%S')) AS key,
                       {_json_select(cols)} AS payload
                FROM {_fq(new_db, table)} t
                ANTI JOIN {_fq(prev_db, table)} p
                  ON p.symbol = t.symbol AND p.timeframe = t.timeframe AND p.ts = t.ts"""
        )
    for ord_, table, channel in ((2, "marts.signals", "signals"), (3, "marts.alerts", "alerts")):
        if table not in counts:
            continue
        cols = _columns(con, _fq(new_db, table))
        if table == "marts.alerts" and "alert_id" in cols:
            key_t, key_p = "CAST(t.alert_id AS VARCHAR)", "CAST(p.alert_id AS VARCHAR)"
        else:
            key_t, key_p = _signal_key(cols, "t"), _signal_key(cols, "p")
        ts_col = "t.ts" if "ts" in cols else "NULL::TIMESTAMP"
        prev_join = ""
        if prev_db is not None and table in prev_tables:
            prev_cols = _columns(con, _fq(prev_db, table))
            needed = {"alert_id"} if key_t.startswith("CAST(t.alert_id") else {
                c for c in ("scan", "symbol", "timeframe", "ts", "kind") if c in cols
            }
            if needed <= set(prev_cols):
                prev_join = (
                    f"ANTI JOIN (SELECT DISTINCT {key_p} AS k FROM {_fq(prev_db, table)} p) pk "
                    f"ON pk.k = {key_t}"
                )
        parts.append(
            f"""SELECT * FROM (
                  SELECT {ord_} AS ord, {ts_col} AS ts, {_lit(channel)} AS channel, {key_t} AS key,
                         {_json_select(cols)} AS payload
                  FROM {_fq(new_db, table)} t {prev_join}
                  ORDER BY ts DESC NULLS LAST, key DESC LIMIT {int(max_items)})"""
        )
    if not parts:
        return 0
    union = " UNION ALL ".join(f"({p})" for p in parts)
    con.execute(
        f"""INSERT INTO {_q(new_db)}.main.feed
            SELECT ?::BIGINT + row_number() OVER (ORDER BY ord, ts NULLS FIRST, key) AS seq,
                   channel, key, payload, ?::TIMESTAMP, ?::BIGINT
            FROM ({union}) ORDER BY seq""",
        [prev_head, now, sequence],
    )
    new = con.sql(f"SELECT count(*) FROM {_q(new_db)}.main.feed WHERE seq > ?", params=[prev_head]).fetchall()[0][0]
    # keep only the retention window
    con.execute(
        f"DELETE FROM {_q(new_db)}.main.feed WHERE seq <= (SELECT max(seq) FROM {_q(new_db)}.main.feed) - ?",
        [retention],
    )
    return int(new)


def _detach(con: duckdb.DuckDBPyConnection, db: str) -> None:
    try:
        con.execute(f"DETACH DATABASE IF EXISTS {_q(db)}")
    except duckdb.Error as exc:  # connection closed or never attached
        log.debug("serving_detach_failed", db=db, error=exc)


def _unlink_db(path: Path) -> None:
    for p in (path, Path(str(path) + ".wal")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cleanup_tmp(serving_dir: Path, older_than_s: float = 0.0) -> None:
    """Remove half-built snapshots left by a crashed publisher (we hold the publish lock)."""
    now = time.time()
    for p in serving_dir.glob(f"{TMP_PREFIX}*"):
        try:
            if now - p.stat().st_mtime >= older_than_s:
                p.unlink()
        except FileNotFoundError:
            pass


def _prune_generations(serving_dir: Path, keep: int) -> None:
    gens = sorted(serving_dir.glob("serving.[0-9]*.duckdb"))
    for p in gens[: max(0, len(gens) - keep)]:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


# ---- DuckLake: publishing records a snapshot id ---------------------------------------------------

# what a publish writes in the lake, by table (created when missing: DDL is a commit)
LAKE_DDL = {
    "main.snapshot_meta": """CREATE TABLE IF NOT EXISTS main.snapshot_meta (
        sequence        BIGINT    NOT NULL,
        published_at    TIMESTAMP NOT NULL,
        feed_head_seq   BIGINT    NOT NULL,
        feed_oldest_seq BIGINT    NOT NULL,
        new_items       BIGINT    NOT NULL,
        source_rows     VARCHAR   NOT NULL,
        warehouse       VARCHAR   NOT NULL,
        data_snapshot   BIGINT    NOT NULL
    )""",
    "main.feed": "CREATE TABLE IF NOT EXISTS main.feed " + FEED_COLUMNS,
}
PUBLISH_MESSAGE = "serving publish"
_BAR_KEY = ("symbol", "timeframe", "ts")
_SIGNAL_KEY = ("scan", "symbol", "timeframe", "ts", "kind")


def _exists_at(con: duckdb.DuckDBPyConnection, table: str, version: int | None = None) -> bool:
    at = f" AT (VERSION => {int(version)})" if version is not None else ""
    try:
        con.sql(f"SELECT 1 FROM {table}{at} LIMIT 0").fetchall()
        return True
    except duckdb.Error:
        return False


def _lake_changes(con: duckdb.DuckDBPyConnection, catalog: str, table: str, start: int, end: int,
                  key: tuple[str, ...]) -> str:
    """The name of a temp table of the rows of ``table`` that are new between snapshots
    ``start`` (exclusive) and ``end`` (inclusive), from DuckLake's change feed (read once):
    inserted rows whose key was not deleted in the same range (a re-load or correction of a
    stored row is not news). Its cost follows the changes, not the table."""
    schema, name = table.split(".")
    tmp = f"_changes_{schema}_{name}"
    cols = ", ".join(_q(c) for c in _columns(con, table))
    on = " AND ".join(f"d.{_q(c)} IS NOT DISTINCT FROM c.{_q(c)}" for c in key)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {tmp} AS SELECT change_type, {cols}
                    FROM ducklake_table_changes({_lit(catalog)}, {_lit(schema)}, {_lit(name)},
                                                {int(start) + 1}, {int(end)})""")
    con.execute(f"""DELETE FROM {tmp} c WHERE change_type NOT IN ('insert', 'update_postimage')
                    OR EXISTS (SELECT 1 FROM {tmp} d WHERE d.change_type IN ('delete', 'update_preimage') AND {on})""")
    con.execute(f"ALTER TABLE {tmp} DROP COLUMN change_type")
    return tmp


def _publish_lake(
    location: str,
    serving_dir: Path,
    con: duckdb.DuckDBPyConnection | None,
    *,
    feed_retention: int,
    max_items_per_channel: int,
) -> PublishResult:
    """Publish = one small commit in the lake: the feed items new since the previous publish
    (from DuckLake's change feed) and a ``snapshot_meta`` row, then the pointer file naming the
    lake snapshot that commit made. Nothing is copied: the cost follows what changed."""
    from trading_pipeline.marketdata import warehouse as wh

    t0 = time.monotonic()
    with _publish_lock(serving_dir):
        own = con is None
        if own:
            if not wh.exists(location):
                raise FileNotFoundError(f"no warehouse at {location}")
            con = wh.connect(location)
        try:
            catalog = con.sql("SELECT current_database()").fetchall()[0][0]
            for table, ddl in LAKE_DDL.items():
                if not _exists_at(con, table):
                    con.execute(ddl)
            prev = con.sql("SELECT sequence, feed_head_seq, data_snapshot FROM main.snapshot_meta "
                           "ORDER BY sequence DESC LIMIT 1").fetchall()
            prev_seq, prev_head, prev_data = prev[0] if prev else (0, 0, None)
            state = _read_state(serving_dir)  # a lake reset under the same home keeps counting up
            prev_seq = max(prev_seq, int(state.get("sequence", 0)))
            prev_head = max(prev_head, int(state.get("feed_head_seq", 0)))
            sequence = prev_seq + 1
            now = _utcnow()
            if prev_data is not None:
                # the previous publish's own commit (feed rows, meta) changed no served table:
                # when it came right after the data it served (no other writer's commit in
                # between), start the change feed after it, so an idle publish reads nothing
                last = con.sql(f"SELECT max(snapshot_id) FROM {_q(catalog)}.snapshots() WHERE commit_message = ?",
                               params=[PUBLISH_MESSAGE]).fetchall()[0][0]
                if last is not None and int(last) == prev_data + 1:
                    prev_data = int(last)
            con.execute("BEGIN TRANSACTION")
            try:
                data = wh.snapshot_id(con)
                have = _tables_in(con, catalog)
                counts = _lake_counts(con, catalog, have)
                new_items = _lake_feed(con, catalog, have, prev_data, data, prev_head=prev_head,
                                       sequence=sequence, now=now, max_items=max_items_per_channel)
                con.execute("DELETE FROM main.feed WHERE seq <= ?", [prev_head + new_items - feed_retention])
                head, oldest = con.sql(
                    "SELECT coalesce(max(seq), ?), coalesce(min(seq), ?) FROM main.feed",
                    params=[prev_head, prev_head + 1],
                ).fetchall()[0]
                con.execute(
                    "INSERT INTO main.snapshot_meta VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [sequence, now, head, oldest, new_items, json.dumps(counts), location, data],
                )
                con.execute(f"CALL {_q(catalog)}.set_commit_message('trading', ?, extra_info => ?)",
                            [PUBLISH_MESSAGE, json.dumps({"sequence": sequence})])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            snap = con.sql(
                f"SELECT max(snapshot_id) FROM {_q(catalog)}.snapshots() WHERE commit_message = ? "
                "AND commit_extra_info = ?", params=[PUBLISH_MESSAGE, json.dumps({"sequence": sequence})],
            ).fetchall()[0][0]
        finally:
            if own:
                con.close()
        pointer = {"warehouse": location, "snapshot_id": int(snap), "data_snapshot": data,
                   "sequence": sequence, "feed_head_seq": int(head), "published_at": now.isoformat()}
        tmp = serving_dir / f".{POINTER_NAME}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(pointer))
        os.replace(tmp, serving_dir / POINTER_NAME)
        _fsync_dir(serving_dir)
        _write_state(serving_dir, {"sequence": sequence, "feed_head_seq": int(head), "published_at": now.isoformat(),
                                   "snapshot_id": int(snap)})
    log.info("serving_published", sequence=sequence, snapshot_id=snap, feed_head_seq=head, new_items=new_items,
             tables=len(counts), duration_ms=round((time.monotonic() - t0) * 1000))
    return PublishResult(serving_dir / POINTER_NAME, sequence, int(head), int(new_items), counts,
                         snapshot_id=int(snap), data_snapshot=data)


def _lake_counts(con: duckdb.DuckDBPyConnection, catalog: str, have: set[str]) -> dict[str, int]:
    """Row counts of the served tables (not views), from the lake's catalog statistics: no
    table is scanned, so a publish costs the same whatever the history."""
    counts: dict[str, int] = {}
    tables = [t for t in TABLES if t in have]
    try:
        stats = dict(con.sql(
            "SELECT schema_name || '.' || table_name, estimated_size FROM duckdb_tables() "
            "WHERE database_name = ?", params=[catalog]).fetchall())
    except duckdb.Error:
        stats = {}
    for t in tables:
        n = stats.get(t)
        if n is None:  # a view (dbt's marts): not counted, that would scan its history
            continue
        counts[t] = int(n)
    return counts


def _lake_feed(
    con: duckdb.DuckDBPyConnection,
    catalog: str,
    have: set[str],
    prev_data: int | None,
    data: int | None,
    *,
    prev_head: int,
    sequence: int,
    now: datetime,
    max_items: int,
) -> int:
    """Append the feed items new since the previous publish (its data snapshot ``prev_data``)."""
    parts: list[str] = []
    changed = prev_data is not None and data is not None and data > prev_data
    for i, table in enumerate(("raw.bars_daily", "raw.bars_intraday")):
        # bars: only when the table existed at the previous publish (history is not news)
        if table not in have or not changed or not _exists_at(con, table, prev_data):
            continue
        cols = {c: t for c, t in _columns(con, table).items() if c not in ("source", "ingested_at")}
        parts.append(
            f"""SELECT {i} AS ord, t.ts AS ts, 'bars:' || t.symbol AS channel,
                       concat_ws('|', t.symbol, t.timeframe, strftime(t.ts, '%Y-%m-%dT%H:%M:%S')) AS key,
                       {_json_select(cols)} AS payload
                FROM {_lake_changes(con, catalog, table, prev_data, data, _BAR_KEY)} t"""
        )
    new_signals = None
    if "marts.signals" in have and (prev_data is None or changed):
        cols = _columns(con, "marts.signals")
        key = tuple(c for c in _SIGNAL_KEY if c in cols)
        if prev_data is None or not _exists_at(con, "marts.signals", prev_data):
            new_signals = "SELECT * FROM marts.signals"  # a baseline: the newest max_items
        else:
            on = " AND ".join(f"p.{_q(c)} IS NOT DISTINCT FROM n.{_q(c)}" for c in key)
            # inserted since the last publish (the change feed) and absent then (a rebuilt
            # table re-inserts every row; a re-run re-inserts the same keys)
            new_signals = (f"SELECT * FROM {_lake_changes(con, catalog, 'marts.signals', prev_data, data, key)} n "
                           f"WHERE NOT EXISTS (SELECT 1 FROM marts.signals p AT (VERSION => {int(prev_data)}) WHERE {on})")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _new_signals AS {new_signals}")
        ts_col = "t.ts" if "ts" in cols else "NULL::TIMESTAMP"
        parts.append(
            f"""SELECT * FROM (
                  SELECT 2 AS ord, {ts_col} AS ts, 'signals' AS channel, {_signal_key(cols, 't')} AS key,
                         {_json_select(cols)} AS payload
                  FROM _new_signals t ORDER BY ts DESC NULLS LAST, key DESC LIMIT {int(max_items)})"""
        )
        if "marts.alerts" in have:
            acols = _columns(con, "marts.alerts")
            # an alert is news when its signal is (alert_id is a hash of the signal's key)
            parts.append(
                f"""SELECT * FROM (
                      SELECT 3 AS ord, t.ts AS ts, 'alerts' AS channel, CAST(t.alert_id AS VARCHAR) AS key,
                             {_json_select(acols)} AS payload
                      FROM marts.alerts t SEMI JOIN _new_signals s ON {" AND ".join(
                          f"s.{_q(c)} IS NOT DISTINCT FROM t.{_q(c)}" for c in key)}
                      ORDER BY ts DESC NULLS LAST, key DESC LIMIT {int(max_items)})"""
            )
    if not parts:
        return 0
    union = " UNION ALL ".join(f"({p})" for p in parts)
    before = con.sql("SELECT count(*) FROM main.feed").fetchall()[0][0]
    con.execute(
        f"""INSERT INTO main.feed
            SELECT ?::BIGINT + row_number() OVER (ORDER BY ord, ts NULLS FIRST, key) AS seq,
                   channel, key, payload, ?::TIMESTAMP, ?::BIGINT
            FROM ({union}) ORDER BY seq""",
        [prev_head, now, sequence],
    )
    for tmp in ("_new_signals", "_changes_raw_bars_daily", "_changes_raw_bars_intraday", "_changes_marts_signals"):
        con.execute(f"DROP TABLE IF EXISTS temp.{tmp}")
    return int(con.sql("SELECT count(*) FROM main.feed").fetchall()[0][0] - before)
