"""The warehouse: connections, the raw schema, and the atomic bar upsert.

Only Dagster runs write here (one writer per store). The warehouse is a DuckLake by default
(docs/decisions.md #15): a catalog (SQLite in ``TRADING_HOME/warehouse/catalog.sqlite``, or
Postgres for many machines) and Parquet data files. Every commit is a snapshot: readers (the
CLI's ``sql`` and ``status``, the API at the published snapshot) never wait for a writer and
can read the warehouse as it was at any retained snapshot (time travel). The extensions come
from the locked ``duckdb-extension-*`` wheels (extensions.py), never from a download.

A DuckDB file (``TRADING_WAREHOUSE=path.duckdb``, the layout before DuckLake) still works:
one process at a time, writers wait for its lock up to ``TRADING_LOCK_WAIT_SECONDS`` (retry.py),
and readers outside runs use the copied serving snapshot. ``trading warehouse migrate`` moves
one into a lake. Other locations (``md:<db>``, ``:memory:``) go to ``duckdb.connect`` unchanged.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import duckdb

# is_lock_error and lock_wait live in retry.py, beside the one retry loop; kept importable here
from trading_pipeline.marketdata.retry import (  # noqa: F401
    LockWait,
    call_waiting_for_lock,
    is_commit_conflict,
    is_lock_error,
    lock_wait,
)
from trading_pipeline.settings import LOCATION_PREFIX, MEMORY, location

if TYPE_CHECKING:  # imported where used: readers such as `trading status` never need it
    import polars as pl

T = TypeVar("T")

SCHEMAS = ("raw", "staging", "intermediate", "marts", "ops")

_BAR_COLUMNS = """
    symbol       VARCHAR   NOT NULL,
    timeframe    VARCHAR   NOT NULL,
    ts           TIMESTAMP NOT NULL,
    session_date DATE      NOT NULL,
    open         DOUBLE    NOT NULL,
    high         DOUBLE    NOT NULL,
    low          DOUBLE    NOT NULL,
    close        DOUBLE    NOT NULL,
    volume       DOUBLE    NOT NULL,
    source       VARCHAR   NOT NULL,
    ingested_at  TIMESTAMP NOT NULL
"""

# corporate actions (marketdata/corporate_actions.py): with the raw tables, since dbt's adjusted
# series read the table whether or not a file was ever loaded
CORPORATE_ACTIONS_DDL = """CREATE TABLE IF NOT EXISTS raw.corporate_actions (
    symbol     VARCHAR NOT NULL,
    ex_date    DATE NOT NULL,
    kind       VARCHAR NOT NULL,
    ratio      DOUBLE,
    amount     DOUBLE,
    new_symbol VARCHAR,
    pay_date   DATE,
    source     VARCHAR NOT NULL,
    warning    VARCHAR,
    loaded_at  TIMESTAMP NOT NULL
)"""

RAW_DDL = [
    f"CREATE TABLE IF NOT EXISTS raw.bars_daily ({_BAR_COLUMNS})",
    f"CREATE TABLE IF NOT EXISTS raw.bars_intraday ({_BAR_COLUMNS})",
    """CREATE TABLE IF NOT EXISTS raw.bars_rejected (
        source       VARCHAR   NOT NULL,
        row_number   BIGINT,
        symbol       VARCHAR,
        timeframe    VARCHAR,
        ts           TIMESTAMP,
        open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE,
        rule         VARCHAR   NOT NULL,
        reason       VARCHAR   NOT NULL,
        run_id       VARCHAR,
        rejected_at  TIMESTAMP NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS raw.symbols (
        symbol      VARCHAR NOT NULL,
        exchange    VARCHAR NOT NULL,
        calendar    VARCHAR NOT NULL,
        timezone    VARCHAR NOT NULL,
        currency    VARCHAR NOT NULL,
        asset_class VARCHAR NOT NULL,
        name        VARCHAR,
        updated_at  TIMESTAMP NOT NULL
    )""",
    """CREATE VIEW IF NOT EXISTS raw.bars AS
        SELECT * FROM raw.bars_daily UNION ALL SELECT * FROM raw.bars_intraday""",
    CORPORATE_ACTIONS_DDL,
]
# a lake's too: one row per bars table, updated by every upsert (_claim_bars_table)
LAKE_DDL = [
    """CREATE TABLE IF NOT EXISTS raw.bar_writes (
        bars_table VARCHAR NOT NULL,
        writes     BIGINT  NOT NULL
    )""",
    """INSERT INTO raw.bar_writes
        SELECT t, 0 FROM (VALUES ('raw.bars_daily'), ('raw.bars_intraday')) v(t)
        WHERE t NOT IN (SELECT bars_table FROM raw.bar_writes)""",
]


# MEMORY, LOCATION_PREFIX and location() parse the TRADING_WAREHOUSE setting: they live in settings
# (which must not import this module), and are used here under the same names
# what a location needs beyond DuckDB itself: (what it is, extension, and what else)
_NEEDS = {
    "md": ("MotherDuck", "motherduck", "a MotherDuck token in MOTHERDUCK_TOKEN and network access"),
    "motherduck": ("MotherDuck", "motherduck", "a MotherDuck token in MOTHERDUCK_TOKEN and network access"),
    "ducklake": ("DuckLake", "ducklake", "the extension of its catalog database (postgres, sqlite) "
                 "and, for object storage, httpfs"),
}
for _scheme in ("s3", "s3a", "gs", "gcs", "r2", "http", "https", "hf"):
    _NEEDS[_scheme] = ("remote file", "httpfs", "credentials for the store (a DuckDB secret)")


class WarehouseLocationError(RuntimeError):
    """The warehouse location cannot be opened, or cannot be used for what was asked of it.

    Raised without a chained cause, so it is the innermost error a failed Dagster step shows
    (``runs.failure_message``); DuckDB's own error is quoted in it and kept in ``duckdb_error``.
    """

    duckdb_error: duckdb.Error | None = None


def is_file(path: Path | str) -> bool:
    return isinstance(location(path), Path)


def is_lake(path: Path | str) -> bool:
    return kind(path) == "ducklake"


def kind(path: Path | str) -> str:
    """``file``, ``memory`` or the location's prefix (``md``, ``ducklake``, ``s3``...)."""
    loc = location(path)
    if isinstance(loc, Path):
        return "file"
    if loc.startswith(MEMORY):
        return "memory"
    return LOCATION_PREFIX.match(loc).group(1).lower()  # type: ignore[union-attr]


@dataclass(frozen=True)
class Lake:
    """A DuckLake location ``ducklake:<catalog type>:<catalog>``: the catalog's database
    (``sqlite``: a file; ``postgres``: a libpq conninfo; ``duckdb``: a file, one process only)."""

    location: str
    catalog_type: str
    catalog: str

    @classmethod
    def parse(cls, loc: str) -> Lake:
        rest = loc.split(":", 1)[1]
        head, sep, tail = rest.partition(":")
        if sep and head.lower() in ("sqlite", "postgres", "duckdb", "mysql"):
            return cls(loc, head.lower(), tail)
        return cls(loc, "duckdb", rest)

    @property
    def catalog_file(self) -> Path | None:
        return Path(self.catalog) if self.catalog_type in ("sqlite", "duckdb") else None

    def exists(self) -> bool:
        f = self.catalog_file
        return f.exists() if f is not None else True

    def default_data_path(self) -> str | None:
        f = self.catalog_file
        return str(f.parent / "data") + "/" if f is not None else None


def lake(path: Path | str) -> Lake:
    loc = location(path)
    if isinstance(loc, Path) or kind(loc) != "ducklake":
        raise WarehouseLocationError(f"{loc!r} is a {describe(loc)}, not a DuckLake (ducklake:...)")
    return Lake.parse(loc)


def exists(path: Path | str) -> bool:
    """Whether a file warehouse (or a lake's SQLite catalog) exists; other locations are
    assumed to (``connect`` tells)."""
    loc = location(path)
    if isinstance(loc, Path):
        return loc.exists()
    if kind(loc) == "ducklake":
        return Lake.parse(loc).exists()
    return True


def local_file(path: Path | str, purpose: str) -> Path:
    """The warehouse file, or a clear error when ``purpose`` needs a file and this is not one."""
    loc = location(path)
    if isinstance(loc, Path):
        return loc
    raise WarehouseLocationError(
        f"{purpose} needs the warehouse as a local DuckDB file; {loc!r} is a {describe(loc)}, "
        "which is not supported for this"
    )


def describe(path: Path | str) -> str:
    k = kind(path)
    if k == "file":
        return "DuckDB file"
    if k == "memory":
        return "in-memory database (private to one connection)"
    if k == "ducklake":
        return f"DuckLake with a {Lake.parse(str(location(path))).catalog_type} catalog"
    what = _NEEDS.get(k, (None,))[0]
    return f"{what} location" if what else f"location for DuckDB's {k!r} extension"


def open_error(loc: str, exc: Exception) -> WarehouseLocationError:
    """DuckDB could not open ``loc`` (not a file): its error, naming the location and what it needs."""
    from trading_pipeline.marketdata.extensions import ExtensionMissing

    k = kind(loc)
    said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    _, ext, more = _NEEDS.get(k, (None, k, None))
    message = f"cannot open the warehouse {loc!r} ({describe(loc)}): {said}"
    if isinstance(exc, ExtensionMissing):
        pass  # it names the missing file and the fix
    elif k == "ducklake":
        lk = Lake.parse(loc)
        if lk.catalog_file is not None:
            message += (f". Check the catalog file {lk.catalog_file} (a {lk.catalog_type} database "
                        "written by DuckLake) and its data folder; restore it from a backup, or point "
                        "TRADING_WAREHOUSE elsewhere")
        else:
            # DuckDB quotes the conninfo twice more before libpq's reason: keep the reason
            reason = re.search(r'Unable to connect to Postgres at "[^"]*": (.+)', said)
            if reason:
                message = f"cannot open the warehouse {loc!r} ({describe(loc)}): cannot connect to Postgres: {reason[1]}"
            message += (f". Check the {lk.catalog_type} server of the catalog is running and reachable from "
                        "here and the conninfo after 'ducklake:postgres:' in TRADING_WAREHOUSE (host, port, "
                        "dbname, user, password) is right; TRADING_WAREHOUSE_DATA_PATH must be where its "
                        "data files are")
    elif k != "memory":
        message += f". It needs DuckDB's {ext!r} extension" + (f" and {more}" if more else "")
    if "extension" in said.lower() and not isinstance(exc, ExtensionMissing):
        from trading_pipeline.marketdata.extensions import EXTENSIONS

        if ext in EXTENSIONS or k == "ducklake":
            message += (f"; DuckDB's extensions come from the locked duckdb-extension-* wheels "
                        f"(v{duckdb.__version__}): run `make env` to install them")
        else:  # not shipped as a wheel (motherduck): DuckDB would download it
            message += (
                f"; DuckDB downloads extensions on first use, so without network install it "
                f"beforehand (`INSTALL {ext}` where there is network, or copy {ext}.duckdb_extension "
                f"into ~/.duckdb/extensions/v{duckdb.__version__}/<platform>/)"
            )
    err = WarehouseLocationError(redact(message))
    err.duckdb_error = exc if isinstance(exc, duckdb.Error) else None
    return err


_SECRETS = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"]+)|(://[^:/@\s]+:)[^@\s]+(@)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` without the password of a libpq conninfo (``password=...``, ``user:pass@``): errors
    quote the location, and they end up on terminals and in run logs."""
    return _SECRETS.sub(lambda m: f"{m[1]}***" if m[1] else f"{m[3]}***{m[4]}", text)


LAKE_ALIAS = "lake"


def attach_statement(
    path: Path | str,
    *,
    alias: str = LAKE_ALIAS,
    read_only: bool = False,
    snapshot_version: int | None = None,
    snapshot_time: str | None = None,
    data_path: str | None = None,
) -> str:
    """The ``ATTACH`` of a DuckLake, as any DuckDB client runs it (``trading sql --print-attach``)."""
    lk = lake(path)
    opts = []
    if data_path is None and not lk.exists():
        data_path = lk.default_data_path() or _settings_data_path()
    if data_path:
        opts.append(f"DATA_PATH {_lit(data_path)}")
    if snapshot_version is not None:
        opts.append(f"SNAPSHOT_VERSION {int(snapshot_version)}")
    if snapshot_time is not None:
        opts.append(f"SNAPSHOT_TIME {_lit(snapshot_time)}")
    if read_only or snapshot_version is not None or snapshot_time is not None:
        opts.append("READ_ONLY")
    tail = f" ({', '.join(opts)})" if opts else ""
    return f"ATTACH {_lit(lk.location)} AS {alias}{tail}"


def _settings_data_path() -> str | None:
    from trading_pipeline.settings import (
        get_settings,  # the one domain read of settings, like lock_wait
    )

    return get_settings().warehouse_data_path or None


def sql_literal(text: str) -> str:
    """``text`` as a SQL string literal (quotes doubled): for the statements DuckDB cannot take
    parameters in (ATTACH, table functions' names)."""
    return "'" + text.replace("'", "''") + "'"


_lit = sql_literal


def connect_lake(
    path: Path | str,
    read_only: bool = False,
    *,
    snapshot_version: int | None = None,
    snapshot_time: str | None = None,
    config: dict | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake attached as ``lake`` and made the default
    catalog (``raw.bars_daily`` resolves as in a file warehouse). Readers never wait for a writer:
    they see the last committed snapshot, or the one pinned by ``snapshot_version``/``snapshot_time``."""
    from trading_pipeline.marketdata import extensions

    lk = lake(path)
    if (read_only or snapshot_version is not None or snapshot_time is not None) and not lk.exists():
        raise FileNotFoundError(f"no warehouse at {lk.location}; run `trading demo` or `trading ingest PATH` first")
    try:
        extensions.require("ducklake")
        extensions.require(lk.catalog_type if lk.catalog_type != "duckdb" else "ducklake")
        data_path = None if lk.exists() else _new_lake_data_path(lk)
        if lk.catalog_file is not None:
            if lk.catalog_file.exists() and not lk.catalog_file.is_file():  # SQLite: "unable to open"
                raise IsADirectoryError(errno.EISDIR, "not a catalog file but a folder", str(lk.catalog_file))
            lk.catalog_file.parent.mkdir(parents=True, exist_ok=True)
        con = extensions.connect(config=config or {})
    except (extensions.ExtensionMissing, OSError) as exc:  # OSError: a folder in the way (a file)
        raise open_error(lk.location, exc) from None

    def attach(data_path: str | None) -> None:
        con.execute(attach_statement(lk.location, read_only=read_only, snapshot_version=snapshot_version,
                                     snapshot_time=snapshot_time, data_path=data_path))

    try:
        try:
            attach(data_path)
        except duckdb.Error as exc:
            # a Postgres catalog may be new or not, which only DuckLake can tell: it refuses to
            # create one without a data path, and then the setting is the data path
            if data_path is not None or read_only or not _NEW_LAKE_WITHOUT_DATA_PATH.search(str(exc)):
                raise
            _create_lake(attach, lk)
        con.execute(f"USE {LAKE_ALIAS}")
        if lk.catalog_type == "sqlite" and not read_only:
            _sqlite_wal(lk.catalog_file)
    except duckdb.Error as exc:
        con.close()
        if read_only and "creating a new DuckLake is explicitly disabled" in str(exc):  # an empty catalog
            raise FileNotFoundError(f"no warehouse at {redact(lk.location)}; run `trading demo` or "
                                    "`trading ingest PATH` first") from None
        raise open_error(lk.location, exc) from None
    except BaseException:
        con.close()
        raise
    return con


_WAL_DONE: set[Path] = set()


def _sqlite_wal(catalog: Path | None) -> None:
    """Put a SQLite catalog in WAL mode (once; the mode is stored in the file). In its default
    rollback-journal mode a reader's open transaction blocks every commit ("database is
    locked" after SQLite's busy timeout); with WAL readers and the writer never wait on each
    other and each reader keeps its snapshot. (WAL needs a local disk, not a network share.)"""
    if catalog is None or catalog in _WAL_DONE:
        return
    import sqlite3

    db = sqlite3.connect(str(catalog), timeout=30)
    try:
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()
    _WAL_DONE.add(catalog)


# DuckLake's refusal to create a lake without DATA_PATH (its catalog holds no lake yet)
_NEW_LAKE_WITHOUT_DATA_PATH = re.compile(r"create a new ducklake .*data_path is not set", re.IGNORECASE)


def _create_lake(attach: Callable[[str], None], lk: Lake) -> None:
    """Attach a lake whose catalog database is empty, creating it. Two processes may do that
    at once (two machines' first load): DuckLake's set-up then fails in the later one on the
    catalog tables the other one made, and the later one attaches again (the lake exists now,
    with the same data path when both read the same setting)."""
    data_path = _new_lake_data_path(lk)
    waiting = LockWait(10, retryable=lambda exc: "Failed to initialize DuckLake" in str(exc)
                       or bool(_NEW_LAKE_WITHOUT_DATA_PATH.search(str(exc))))
    while True:
        try:
            return attach(data_path)
        except duckdb.Error as exc:
            if not waiting.retry(exc):
                raise


def _new_lake_data_path(lk: Lake) -> str:
    """Where a new lake puts its data files (made if a local folder), or a clear error."""
    data_path = lk.default_data_path() or _settings_data_path()
    if data_path is None:
        raise WarehouseLocationError(
            f"a new DuckLake with a {lk.catalog_type} catalog ({redact(lk.location)!r}) needs a data path: set "
            "TRADING_WAREHOUSE_DATA_PATH (a folder or s3://bucket/prefix/)"
        )
    if "://" not in data_path:
        try:
            Path(data_path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise open_error(lk.location, exc) from None
    return data_path


def snapshot_id(con: duckdb.DuckDBPyConnection) -> int | None:
    """The lake snapshot this connection sees (None for a warehouse that is not a lake)."""
    try:
        row = con.sql(f"SELECT id FROM {LAKE_ALIAS}.current_snapshot()").fetchone()
    except duckdb.Error:
        return None
    return int(row[0]) if row else None


def connect(path: Path | str, read_only: bool = False, retries: float | None = None) -> duckdb.DuckDBPyConnection:
    """Open the warehouse. A DuckLake (the default) never waits: readers see the last committed
    snapshot and writers commit optimistically (:func:`connect_lake`). A DuckDB file waits up to
    ``retries`` seconds (default: the ``lock_wait_seconds`` setting) for another process's lock
    (retry.LockWait).

    Another location goes to ``duckdb.connect`` unchanged; DuckDB's error when it cannot open
    one (extension missing, no token) comes back as a :class:`WarehouseLocationError` naming the
    location and what it needs.
    """
    loc = location(path)
    if not isinstance(loc, Path):
        if kind(loc) == "ducklake":
            return connect_lake(loc, read_only=read_only)
        try:
            return duckdb.connect(loc, read_only=read_only)
        except duckdb.Error as exc:
            raise open_error(loc, exc) from None
    path = loc
    if read_only and not path.exists():
        raise FileNotFoundError(
            f"no warehouse at {path}; run `trading demo` or `trading ingest PATH` first"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return call_waiting_for_lock(lambda: duckdb.connect(str(path), read_only=read_only), retries)


def probe(path: Path | str) -> None:
    """Open a lake as its writers will (creating it if new) and close it: a
    :class:`WarehouseLocationError` here, before a command starts a run, rather than a failed
    run. Other locations are left to the run (a DuckDB file would be locked meanwhile)."""
    if is_lake(path):
        connect(path).close()


def wait_writable(path: Path | str, deadline: float) -> None:
    """Return once the warehouse file can be opened for writing (opened and closed at once),
    or at ``deadline`` (``time.monotonic()``) in any case: the caller's own open then fails
    with DuckDB's lock error. For writers that open the file in another process (dbt).
    A lake has no file lock: nothing to wait for."""
    loc = location(path)
    if not isinstance(loc, Path) or not loc.exists():
        return
    try:
        call_waiting_for_lock(lambda: duckdb.connect(str(loc)).close(), deadline=deadline)
    except duckdb.IOException:
        return


@contextmanager
def writer(path: Path | str) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(path)
    try:
        ensure_schema(con)
        yield con
    finally:
        con.close()


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """The schemas and raw tables, created once: on a lake every DDL statement is a commit, so
    nothing runs when they are all there already. Two processes creating them at once (the
    first loads of two machines on a new lake) conflict: the later statement runs again and
    finds the name there."""
    have = {r[0] for r in con.sql(
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "UNION ALL SELECT schema_name || '.' || view_name FROM duckdb_views() WHERE database_name = current_database()"
    ).fetchall()}
    lake = _is_lake(con)
    if {"raw.bars_daily", "raw.bars_intraday", "raw.bars_rejected", "raw.symbols", "raw.bars",
            "raw.corporate_actions", *(["raw.bar_writes"] if lake else [])} <= have:
        return
    waiting = LockWait(retryable=is_commit_conflict)
    for stmt in [f"CREATE SCHEMA IF NOT EXISTS {schema}" for schema in SCHEMAS] + RAW_DDL + (LAKE_DDL if lake else []):
        while True:
            try:
                con.execute(stmt)
                break
            except duckdb.Error as exc:
                if not waiting.retry(exc):
                    raise


def bars_table(timeframe: str) -> str:
    return "raw.bars_daily" if timeframe == "1d" else "raw.bars_intraday"


def upsert_bars(
    con: duckdb.DuckDBPyConnection,
    table: str,
    bars: pl.DataFrame,
    source: str,
    in_transaction: bool = False,
) -> int:
    """Replace rows with the same (symbol, timeframe, ts) and insert the rest, atomically.

    Delete-then-insert inside one transaction (the caller's, with ``in_transaction``, else
    :func:`transaction`'s, run again on a lake's commit conflict): re-running the same load
    changes nothing, and a load that dies half-way (even ``kill -9``) leaves nothing (DuckDB's
    WAL rolls a file back; a lake's catalog never saw the transaction).
    """
    import polars as pl

    staged = bars.with_columns(
        pl.lit(source).alias("source"),
        pl.lit(None, dtype=pl.Datetime("us")).alias("ingested_at"),
    )

    def write() -> None:
        _claim_bars_table(con, table)
        con.register("_staged_bars", staged)
        try:
            con.execute(
                f"""DELETE FROM {table} t USING _staged_bars s
                    WHERE t.symbol = s.symbol AND t.timeframe = s.timeframe AND t.ts = s.ts"""
            )
            con.execute(
                f"""INSERT INTO {table}
                    SELECT symbol, timeframe, ts, session_date, open, high, low, close, volume,
                           source, now()::TIMESTAMP
                    FROM _staged_bars"""
            )
        finally:
            con.unregister("_staged_bars")

    if in_transaction:
        write()
    else:
        transaction(con, write)
    return bars.height


def _claim_bars_table(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """On a lake, make this transaction conflict with any other upsert committed meanwhile.

    DuckLake only sees a conflict when one transaction inserts into a table another one
    deleted from. Two loads of the same *new* bars delete nothing: both would commit, and the
    bars would be there twice. Every upsert updates (deletes and inserts) a row of
    ``raw.bar_writes``, so the later of two concurrent upserts always conflicts, is rolled back
    and runs again (:func:`transaction`), and then its DELETE finds the other's bars."""
    if not _is_lake(con):
        return  # a DuckDB file has one writing process at a time
    claimed = con.execute("UPDATE raw.bar_writes SET writes = writes + 1 WHERE bars_table = ?", [table]).fetchone()
    if not claimed or not claimed[0]:
        con.execute("INSERT INTO raw.bar_writes VALUES (?, 1)", [table])


def _is_lake(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.sql("SELECT type FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    return bool(row) and row[0] == "ducklake"


def transaction(con: duckdb.DuckDBPyConnection, work: Callable[[], T], wait: float | None = None) -> T:
    """``work()`` in one transaction, committed; any error rolls it back and is raised.

    On a lake, writers in other processes (another machine's load, dbt) commit optimistically:
    DuckLake refuses a commit that conflicts with one made since this transaction began (both
    deleted from the same table...) and rolls it back. Then the whole transaction runs again
    on the new snapshot, with backoff, for up to ``wait`` seconds (default
    ``TRADING_LOCK_WAIT_SECONDS``, as a file writer waits for the lock): ``work`` must be
    safe to repeat (it re-reads what it depends on)."""
    waiting: LockWait | None = None
    while True:
        con.execute("BEGIN TRANSACTION")
        try:
            out = work()
            con.execute("COMMIT")
            return out
        except BaseException as exc:
            rollback(con)
            if not isinstance(exc, duckdb.Error) or not is_commit_conflict(exc):
                raise
            waiting = waiting or LockWait(wait, retryable=is_commit_conflict)
            if not waiting.retry(exc):
                raise


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """ROLLBACK, unless the transaction has ended already: a COMMIT that failed (a lake's
    commit conflict) rolled it back, and a second ROLLBACK would raise "no transaction is
    active" in place of the commit's own error."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


# DuckDB 2.0: a result from execute() that is not fully fetched blocks the connection
# ("unfinished result"); relations from sql() do not. Reads go through these two.
def fetch_frame(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pl.DataFrame:
    """A query's result as a polars frame. With parameters it is executed, not made a
    relation: ``con.sql(sql, params=...).pl()`` took 20 s where this takes 1 s for 2.5M
    bars of a lake (DuckDB 1.5.5), the bar checks' read of what a load wrote."""
    if params:
        return con.execute(sql, params).pl()
    return con.sql(sql).pl()


def fetch_one(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple | None:
    rows = con.sql(sql, params=params).fetchall()
    return rows[0] if rows else None
