"""The DuckDB warehouse: connections, the raw schema, and the atomic bar upsert.

Only Dagster runs write here (one writer per store). Readers outside a run (the CLI's
``status`` and ``sql``) open it read-only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
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


def connect(path: Path | str, read_only: bool = False, retries: float = 30.0) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, waiting up to ``retries`` seconds for another process's lock."""
    path = Path(path)
    if read_only and not path.exists():
        raise FileNotFoundError(
            f"no warehouse at {path}; run `trading demo` or `trading ingest PATH` first"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + retries
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


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
