"""The DuckDB warehouse: connections, the raw schema, and the atomic bar upsert.

Only Dagster runs write here (one writer per store). Readers outside a run (the CLI's
``status`` and ``sql``, the API) read the published serving snapshot instead (serving.py):
DuckDB lets no writer open a file another process holds, even read-only. Writers wait for
such a lock up to ``TRADING_LOCK_WAIT_SECONDS`` (``connect``, ``wait_writable``; the loop is
retry.py's).

The warehouse is a local DuckDB file by default. A location DuckDB opens itself is passed to
``duckdb.connect`` unchanged: ``md:<db>`` (MotherDuck), ``ducklake:<metadata>`` (DuckLake),
any other ``<prefix>:`` DuckDB maps to an extension, and ``:memory:``. Only file locations get
their folder created, an existence check and the lock retry.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

# is_lock_error and lock_wait live in retry.py, beside the one retry loop; kept importable here
from trading_pipeline.marketdata.retry import call_waiting_for_lock, is_lock_error, lock_wait  # noqa: F401
from trading_pipeline.settings import LOCATION_PREFIX, MEMORY, location

if TYPE_CHECKING:  # imported where used: readers such as `trading status` never need it
    import polars as pl

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
        symbol      VARCHAR PRIMARY KEY,
        exchange    VARCHAR NOT NULL,
        calendar    VARCHAR NOT NULL,
        timezone    VARCHAR NOT NULL,
        currency    VARCHAR NOT NULL,
        asset_class VARCHAR NOT NULL,
        name        VARCHAR,
        updated_at  TIMESTAMP NOT NULL
    )""",
    """CREATE OR REPLACE VIEW raw.bars AS
        SELECT * FROM raw.bars_daily UNION ALL SELECT * FROM raw.bars_intraday""",
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


def kind(path: Path | str) -> str:
    """``file``, ``memory`` or the location's prefix (``md``, ``ducklake``, ``s3``...)."""
    loc = location(path)
    if isinstance(loc, Path):
        return "file"
    if loc.startswith(MEMORY):
        return "memory"
    return LOCATION_PREFIX.match(loc).group(1).lower()  # type: ignore[union-attr]


def exists(path: Path | str) -> bool:
    """Whether a file warehouse exists; other locations are assumed to (``connect`` tells)."""
    loc = location(path)
    return loc.exists() if isinstance(loc, Path) else True


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
    what = _NEEDS.get(k, (None,))[0]
    return f"{what} location" if what else f"location for DuckDB's {k!r} extension"


def open_error(loc: str, exc: duckdb.Error) -> WarehouseLocationError:
    """DuckDB could not open ``loc`` (not a file): its error, naming the location and what it needs."""
    k = kind(loc)
    said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    _, ext, more = _NEEDS.get(k, (None, k, None))
    message = f"cannot open the warehouse {loc!r} ({describe(loc)}): {said}"
    if k != "memory":
        message += f". It needs DuckDB's {ext!r} extension" + (f" and {more}" if more else "")
        if "extension" in said.lower():
            message += (
                f"; DuckDB downloads extensions on first use, so without network install it "
                f"beforehand (`INSTALL {ext}` where there is network, or copy {ext}.duckdb_extension "
                f"into ~/.duckdb/extensions/v{duckdb.__version__}/<platform>/)"
            )
    err = WarehouseLocationError(message)
    err.duckdb_error = exc
    return err


def connect(path: Path | str, read_only: bool = False, retries: float | None = None) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, waiting up to ``retries`` seconds (default: the
    ``lock_wait_seconds`` setting) for another process's lock (retry.LockWait).

    A location that is not a file goes to ``duckdb.connect`` unchanged; DuckDB's error when
    it cannot open one (extension missing, no token) comes back as a
    :class:`WarehouseLocationError` naming the location and what it needs.
    """
    loc = location(path)
    if not isinstance(loc, Path):
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


def wait_writable(path: Path | str, deadline: float) -> None:
    """Return once the warehouse file can be opened for writing (opened and closed at once),
    or at ``deadline`` (``time.monotonic()``) in any case: the caller's own open then fails
    with DuckDB's lock error. For writers that open the file in another process (dbt)."""
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
    for schema in SCHEMAS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for stmt in RAW_DDL:
        con.execute(stmt)


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

    Delete-then-insert inside one transaction (the caller's, with ``in_transaction``):
    re-running the same load changes nothing, and a load that dies half-way (even
    ``kill -9``) is rolled back by DuckDB's WAL.
    """
    import polars as pl

    staged = bars.with_columns(
        pl.lit(source).alias("source"),
        pl.lit(None, dtype=pl.Datetime("us")).alias("ingested_at"),
    )
    if not in_transaction:
        con.execute("BEGIN TRANSACTION")
    try:
        con.register("_staged_bars", staged)
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
        if not in_transaction:
            con.execute("COMMIT")
    except BaseException:
        if not in_transaction:
            con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_staged_bars")
    return bars.height


# DuckDB 2.0: a result from execute() that is not fully fetched blocks the connection
# ("unfinished result"); relations from sql() do not. Reads go through these two.
def fetch_frame(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pl.DataFrame:
    return con.sql(sql, params=params).pl()


def fetch_one(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple | None:
    rows = con.sql(sql, params=params).fetchall()
    return rows[0] if rows else None
