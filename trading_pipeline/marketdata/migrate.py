"""Move a warehouse from before DuckLake (``TRADING_HOME/warehouse.duckdb``) into the lake.

What is copied is what nothing else can rebuild: every table of ``raw`` (bars, rejected rows,
symbols, the load records) and ``ops`` (the order mirror, daily portfolio marks), and the
stored backtest results (``marts.backtest_*``). The dbt models are not copied: a scan
rebuilds them from the bars. The old file is opened read-only and never changed, moved or
deleted.

Copying is one lake transaction (one snapshot: all of it or nothing) and can be run again:
rows the lake already holds are not copied twice (bars and symbols by their key, with the
lake's own version winning; other tables row by row), and an order mirror the lake already
has is left to the next orders run, which re-mirrors it from the ops store.

A file written by a newer DuckDB than this one (DuckLake pins duckdb 1.5.5; DuckDB 2.0 files
cannot be read by 1.5) cannot be opened here at all: :class:`MigrationError` then says how
to export it to Parquet with a DuckDB that can (``EXPORT DATABASE``), and ``--from-export``
reads that export.
"""

from __future__ import annotations

import json
import re
import shlex
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.marketdata.warehouse import sql_literal as _lit
from trading_pipeline.settings import Settings

LEGACY_FILE = "warehouse.duckdb"
SOURCE_ALIAS = "legacy"
COPIED_SCHEMAS = ("raw", "ops")
STORED_MARTS = "backtest_"  # marts.backtest_*: results of `trading backtest`, which no scan rebuilds
# tables whose rows are identified by a key: a row of the old file whose key the lake holds
# already is not copied (the lake's is the same load, or a newer one)
KEYS: dict[str, tuple[str, ...]] = {
    "raw.bars_daily": ("symbol", "timeframe", "ts"),
    "raw.bars_intraday": ("symbol", "timeframe", "ts"),
    "raw.symbols": ("symbol",),
    "ops.portfolio_daily": ("session_date", "account"),
}
# the orders run replaces these from the ops store each time (defs/orders.py): a lake that
# has its own copy keeps it
MIRRORED = ("accounts", "equity_marks", "fills", "order_events", "orders", "positions", "risk_events")
COMMIT_MESSAGE = "trading warehouse migrate"
# DuckDB's refusal to open a file a newer DuckDB wrote (1.5.5: "Trying to read a database file
# with version number 999, but we can only read versions between 64 and 68. The database file
# was created with an newer version of DuckDB.")
_NEWER = re.compile(r"created with an? newer version of DuckDB|version number \d+, but we can only read versions",
                    re.IGNORECASE)
_COPY = re.compile(r"^\s*COPY\s+(?P<table>.+?)\s+FROM\s+'(?P<file>(?:[^']|'')*)'\s*(?P<options>\(.*\))?\s*;?\s*$",
                   re.IGNORECASE)


class MigrationError(RuntimeError):
    """The old warehouse cannot be read (or the target is not a lake): what happened, what to
    do (``hint``), and the commands to run, when there are some. Nothing was written."""

    def __init__(self, message: str, hint: str | None = None, commands: list[str] | None = None):
        super().__init__(message)
        self.hint = hint
        self.commands = commands or []


def legacy_file(settings: Settings) -> Path:
    return settings.home / LEGACY_FILE


def legacy_warehouse_hint(settings: Settings) -> str | None:
    """What to tell a user whose default lake does not exist yet but whose home holds a
    warehouse from before it (``TRADING_HOME/warehouse.duckdb``); None otherwise."""
    if settings.warehouse or wh.exists(settings.warehouse_path):
        return None
    old = legacy_file(settings)
    if not old.exists():
        return None
    return (f"{old} is a warehouse from before DuckLake; the warehouse is now the lake under "
            f"{settings.home / 'warehouse'}: run `trading warehouse migrate` to copy its bars into it "
            "(the file is left as it is), then `trading scan`")


# ---- the file's header ---------------------------------------------------------------------------

def written_by(path: Path) -> str | None:
    """The DuckDB version that created a database file (``v2.0.1``), from its header; None
    when the header does not say (not a DuckDB file, or one older than the field)."""
    try:
        with open(path, "rb") as f:
            head = f.read(96)
    except OSError:
        return None
    if len(head) < 84 or head[8:12] != b"DUCK":
        return None
    text = head[52:84].split(b"\0", 1)[0].decode("ascii", "replace").strip()
    return text if re.fullmatch(r"v\d+\.\d+\.\d+\S*", text) else None


def storage_version(path: Path) -> int | None:
    """The storage format number in a DuckDB file's header (64-68 for DuckDB 1.x)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    return struct.unpack("<Q", head[12:20])[0] if len(head) == 20 and head[8:12] == b"DUCK" else None


def default_export_dir(path: Path) -> Path:
    return path.with_name(f"{path.stem}-export")


def export_commands(path: Path, export_dir: Path, version: str | None) -> list[str]:
    """The commands that copy ``path`` out with the DuckDB that wrote it (``version``) as
    Parquet, and read that copy into the lake."""
    pin = f"duckdb=={version.lstrip('v')}" if version else "duckdb"
    # the paths as arguments: the code stays the same, readable line whatever they hold
    code = ("import duckdb, sys; duckdb.connect(sys.argv[1], read_only=True)"
            ".execute('EXPORT DATABASE ' + repr(sys.argv[2]) + ' (FORMAT parquet)')")
    return [
        f'uv run --no-project --with {pin} python -c "{code}" {shlex.quote(str(path))} {shlex.quote(str(export_dir))}',
        f"trading warehouse migrate --from-export {shlex.quote(str(export_dir))}",
    ]


def open_error(path: Path, exc: duckdb.Error) -> MigrationError:
    """What a user should do when DuckDB cannot open the old file (its error ``exc``)."""
    said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if _NEWER.search(str(exc)):
        version = written_by(path)  # the DuckDB that created it; a later one may have upgraded it
        if version and _version_tuple(version) <= _version_tuple(duckdb.__version__):
            version = None
        who = f"DuckDB {version}" if version else "a newer DuckDB"
        export_dir = default_export_dir(path)
        return MigrationError(
            f"{path} was written by {who}, which this DuckDB ({duckdb.__version__}, the version DuckLake "
            f"needs) cannot read: {said}",
            f"export it to Parquet with {who.replace('a newer', 'that')} and migrate the export (the file is "
            f"left as it is; the export goes to {export_dir}):",
            export_commands(path, export_dir, version),
        )
    if wh.is_lock_error(exc):
        return MigrationError(f"{path} is held by another process: {said}",
                              "stop what has it open (`make down`, a `trading sql --live`) and run this again")
    if "not a valid DuckDB database" in str(exc):
        return MigrationError(f"{path} is not a DuckDB database file: {said}",
                              "pass the warehouse.duckdb of the home to migrate with --from PATH")
    return MigrationError(f"cannot open {path}: {said}")


# ---- sources ---------------------------------------------------------------------------------

@dataclass
class Source:
    """The old warehouse's tables to copy: qualified name -> the relation to read it from."""

    kind: str  # "file" or "export"
    path: Path
    relations: dict[str, str] = field(default_factory=dict)
    written_by: str | None = None


def wanted(table: str) -> bool:
    schema, _, name = table.partition(".")
    return schema in COPIED_SCHEMAS or (schema == "marts" and name.startswith(STORED_MARTS))


def attach_file(con: duckdb.DuckDBPyConnection, path: Path) -> Source:
    """Attach the old file read-only to ``con`` as ``legacy`` and list its tables to copy."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise MigrationError(f"no DuckDB file at {path}",
                             "pass the old warehouse with --from PATH (default: $TRADING_HOME/warehouse.duckdb)")
    try:
        con.execute(f"ATTACH {_lit(str(path))} AS {SOURCE_ALIAS} (READ_ONLY)")
    except duckdb.Error as exc:
        raise open_error(path, exc) from None
    rows = con.sql("SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY 1, 2",
                   params=[SOURCE_ALIAS]).fetchall()
    relations = {f"{s}.{t}": f"{SOURCE_ALIAS}.{_q(s)}.{_q(t)}" for s, t in rows if wanted(f"{s}.{t}")}
    return Source("file", path, relations, written_by(path))


def read_export(export_dir: Path) -> Source:
    """The tables of an ``EXPORT DATABASE ... (FORMAT parquet)`` folder, from its ``load.sql``."""
    export_dir = Path(export_dir).expanduser().resolve()
    load = export_dir / "load.sql"
    if not load.is_file():
        raise MigrationError(f"{export_dir} is not a DuckDB export: it has no load.sql",
                             "pass the folder EXPORT DATABASE wrote (it holds schema.sql, load.sql and .parquet files)")
    relations = {}
    for line in load.read_text().splitlines():
        m = _COPY.match(line)
        if not m:
            continue
        parts = _identifiers(m["table"])
        if len(parts) != 2 or not wanted(".".join(parts)):
            continue
        if "parquet" not in (m["options"] or "").lower():
            raise MigrationError(f"{export_dir} was exported as CSV, not Parquet ({line.strip()})",
                                 "export again with EXPORT DATABASE '<dir>' (FORMAT parquet)")
        file = Path(m["file"].replace("''", "'"))
        if not file.is_absolute() or not file.exists():  # a relative path is relative to where it ran
            file = export_dir / file.name
        if not file.exists():
            raise MigrationError(f"{export_dir}: {file.name}, named in load.sql, is missing",
                                 "export the old warehouse again")
        relations[".".join(parts)] = f"read_parquet({_lit(str(file))})"
    return Source("export", export_dir, relations)


def open_source(con: duckdb.DuckDBPyConnection, *, source_file: Path | None = None,
                export_dir: Path | None = None) -> Source:
    if (source_file is None) == (export_dir is None):
        raise ValueError("give one of source_file and export_dir")
    return attach_file(con, source_file) if source_file is not None else read_export(export_dir)


def inspect(*, source_file: Path | None = None, export_dir: Path | None = None) -> dict:
    """The tables that would be copied and their rows, read in a private in-memory DuckDB:
    raises :class:`MigrationError` (nothing written anywhere) when the source cannot be read."""
    from trading_pipeline.marketdata import extensions

    con = extensions.connect()  # read_parquet for an export, from the wheels like every connection
    try:
        src = open_source(con, source_file=source_file, export_dir=export_dir)
        rows = {t: _count(con, rel) for t, rel in src.relations.items()}
    except duckdb.Error as exc:
        raise MigrationError(f"cannot read {source_file or export_dir}: {' '.join(str(exc).split())}") from None
    finally:
        con.close()
    return {"kind": src.kind, "path": str(src.path), "written_by": src.written_by, "tables": rows}


# ---- the copy --------------------------------------------------------------------------------

def migrate(target: Path | str, *, source_file: Path | None = None, export_dir: Path | None = None) -> dict:
    """Copy the old warehouse's raw, ops and backtest tables into the lake at ``target`` in one
    transaction, verify every row of the source is in the lake, and return per table the
    rows in the source, copied, and in the lake afterwards."""
    if not wh.is_lake(target):
        raise MigrationError(f"the warehouse {wh.location(target)} is a {wh.describe(target)}, not a DuckLake",
                             "migrate copies into the default lake: unset TRADING_WAREHOUSE (or set it to a "
                             "ducklake:... location) and run this again")
    inspect(source_file=source_file, export_dir=export_dir)  # refuse an unreadable source before the lake exists
    t0 = time.monotonic()
    con = wh.connect(target)
    try:
        src = open_source(con, source_file=source_file, export_dir=export_dir)
        catalog = con.sql("SELECT current_database()").fetchall()[0][0]
        wh.ensure_schema(con)
        tables: dict[str, dict] = {}
        con.execute("BEGIN TRANSACTION")
        try:
            for table, rel in src.relations.items():
                tables[table] = _copy(con, catalog, table, rel)
            if any(t["copied"] for t in tables.values()):
                con.execute(f"CALL {_q(catalog)}.set_commit_message('trading', ?, extra_info => ?)",
                            [COMMIT_MESSAGE, json.dumps({"from": str(src.path), "kind": src.kind})])
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise
        snapshot = wh.snapshot_id(con)
    finally:
        con.close()
    return {"from": str(src.path), "kind": src.kind, "written_by": src.written_by, "warehouse": str(target),
            "snapshot_id": snapshot, "tables": tables,
            "rows_copied": sum(t["copied"] for t in tables.values()),
            "seconds": round(time.monotonic() - t0, 2)}


def _copy(con: duckdb.DuckDBPyConnection, catalog: str, table: str, rel: str) -> dict:
    schema, name = table.split(".")
    target = f"{_q(catalog)}.{_q(schema)}.{_q(name)}"
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(catalog)}.{_q(schema)}")
    con.execute(f"CREATE TABLE IF NOT EXISTS {target} AS SELECT * FROM {rel} LIMIT 0")
    src_cols = [c for c, in con.sql(f"SELECT column_name FROM (DESCRIBE SELECT * FROM {rel})").fetchall()]
    dst_cols = [c for c, in con.sql(f"SELECT column_name FROM (DESCRIBE {target})").fetchall()]
    cols = [c for c in dst_cols if c in src_cols]
    dropped = [c for c in src_cols if c not in dst_cols]
    sel = ", ".join(_q(c) for c in cols)
    source_rows = _count(con, rel)
    before = _count(con, target)
    entry = {"source_rows": source_rows, "copied": 0, "lake_rows": before}
    if dropped:
        entry["columns_not_copied"] = dropped
    if schema == "ops" and name in MIRRORED and before:
        entry["kept"] = "the lake's own mirror (the orders run re-mirrors it from the ops store)"
        return entry
    key = KEYS.get(table)
    if key and all(k in cols for k in key):
        on = " AND ".join(f"t.{_q(k)} IS NOT DISTINCT FROM s.{_q(k)}" for k in key)
        new = f"SELECT {sel} FROM {rel} s WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {on})"
    else:
        key = None
        new = f"SELECT {sel} FROM {rel} EXCEPT ALL SELECT {sel} FROM {target}"
    con.execute(f"INSERT INTO {target} ({sel}) {new}")
    after = _count(con, target)
    # verify: every row (or key) of the source is in the lake now
    missing = _count(con, f"({new})")
    if missing:
        raise RuntimeError(f"{table}: {missing:,} row(s) of the old warehouse are not in the lake after the copy")
    entry.update(copied=after - before, lake_rows=after)
    return entry


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:  # the failed COMMIT ended the transaction already
        pass


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:3])


def _count(con: duckdb.DuckDBPyConnection, rel: str) -> int:
    return int(con.sql(f"SELECT count(*) FROM {rel}").fetchall()[0][0])


def _identifiers(text: str) -> list[str]:
    """``raw.bars_daily`` / ``"raw"."bars_daily"`` -> ``["raw", "bars_daily"]``."""
    return [q.replace('""', '"') if q else p for q, p in re.findall(r'"((?:[^"]|"")*)"|([^."\s]+)', text)]




def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
