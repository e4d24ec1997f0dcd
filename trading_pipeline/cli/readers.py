"""`trading status`, `trading sql` and `trading scan`: readers of the warehouse that never wait for a
writer (the DuckLake's last committed snapshot, or a DuckDB file's serving snapshot)."""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trading_pipeline.cli.output import (
    JsonOpt,
    console,
    err_console,
    fail,
    frame_table,
    print_json,
    progress_bar,
)
from trading_pipeline.settings import get_settings

if TYPE_CHECKING:  # polars is imported by the commands that use it (0.4 s at start-up)
    import polars as pl


#
# The CLI's readers never open a warehouse *file*: DuckDB lets no writer in while another
# process holds it, so a `trading sql` or `trading status` would fail a scan. They read the
# published serving snapshot (serving/publish.py: a new file, os.replace'd in after every scan and
# load). A warehouse that is not a file (md:, ducklake:) takes no file lock and is read
# directly: on the DuckLake every reader sees the last committed snapshot. `trading sql --live`
# opts into a warehouse file itself.


def _reads_snapshot(settings, live: bool = False) -> bool:
    from trading_pipeline.marketdata import warehouse
    return warehouse.is_file(settings.warehouse_path) and not live


def _open_reader(settings, live: bool = False):
    """(read-only connection, what it reads) for the CLI's readers, or a clear error (exit 1)."""
    from trading_pipeline.marketdata import warehouse
    from trading_pipeline.serving import snapshot as serving
    if _reads_snapshot(settings, live):
        try:
            return serving.open_snapshot(settings.serving_dir), "snapshot"
        except serving.NoSnapshot:
            if warehouse.exists(settings.warehouse_path):
                fail(f"nothing published yet in {settings.home} (the CLI reads the serving snapshot, "
                     "published after every scan and load)",
                     "run `trading scan`, or read the warehouse itself with `trading sql --live`")
            fail(f"no warehouse at {settings.warehouse_path}", "run `trading demo` or `trading ingest PATH` first")
    try:
        return warehouse.connect(settings.warehouse_path, read_only=True), "warehouse"
    except FileNotFoundError as exc:  # nothing loaded yet
        fail(str(exc))
    except warehouse.WarehouseLocationError as exc:  # a location that cannot be opened: exit 2
        fail(str(exc), code=2)


def _relations(con, what: str) -> set[str]:
    from trading_pipeline.marketdata import warehouse
    from trading_pipeline.serving import snapshot as serving
    if what == "snapshot":
        return serving.snapshot_tables(con)
    return {r[0] for r in warehouse.fetch_frame(
        con, "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables").iter_rows()}


def status(json_out: JsonOpt = False) -> None:
    """Bars per timeframe (symbols, date ranges), the last run (dead if its process is gone),
    failed checks, whether the marts are out of date, and the newest risk alerts. Reads the
    published snapshot, Dagster's run records and the ops store; never waits on a running scan."""
    from trading_pipeline import run_state
    from trading_pipeline.marketdata import warehouse
    settings = get_settings()
    info: dict = {"home": str(settings.home), "warehouse": str(settings.warehouse_path)}
    from trading_pipeline.serving.snapshot import watched_path
    published = watched_path(settings.serving_dir).exists()  # the lake pointer, or the copy
    from trading_pipeline.marketdata.migrate import legacy_warehouse_hint
    legacy = legacy_warehouse_hint(settings)  # a warehouse.duckdb from before the lake, and no lake
    if not warehouse.exists(settings.warehouse_path) and not published:
        if json_out:
            info["bars"] = []
            info.update({"hint": legacy} if legacy else {})
            print_json(info)
            return
        fail(f"no warehouse at {settings.warehouse_path}", legacy or "run `trading demo` or `trading ingest PATH` first")
    bars: list[dict] = []
    rejected, symbols, tables, snap = 0, 0, [], None
    if published or not _reads_snapshot(settings):
        con, what = _open_reader(settings)
        try:
            have = _relations(con, what)
            parts = [f"SELECT timeframe, symbol, ts FROM {t}" for t in ("raw.bars_daily", "raw.bars_intraday") if t in have]
            if parts:  # plain rows, not a polars frame: status stays quick to start
                rel = con.sql(
                    f"""SELECT timeframe, count(DISTINCT symbol) AS symbols, count(*) AS bars,
                              min(ts)::VARCHAR AS first_bar, max(ts)::VARCHAR AS last_bar
                       FROM ({' UNION ALL '.join(parts)}) GROUP BY timeframe ORDER BY timeframe""")
                bars = [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]
            if "raw.bars_rejected" in have:
                rejected = warehouse.fetch_one(con, "SELECT count(*) FROM raw.bars_rejected")[0]
            if "raw.symbols" in have:
                symbols = warehouse.fetch_one(con, "SELECT count(*) FROM raw.symbols")[0]
            tables = sorted(t for t in have if t.split(".")[0] in ("staging", "intermediate", "marts", "ops"))
            if what == "snapshot":
                row = con.sql("SELECT sequence, published_at::VARCHAR FROM main.snapshot_meta "
                              "ORDER BY sequence DESC LIMIT 1").fetchall()
                snap = {"sequence": row[0][0], "published_at": row[0][1]} if row else None
            elif warehouse.is_lake(settings.warehouse_path):
                from trading_pipeline.serving.snapshot import read_pointer
                pointer = read_pointer(settings.serving_dir)
                snap = pointer and {"sequence": pointer["sequence"], "published_at": pointer["published_at"],
                                    "lake_snapshot_id": pointer["snapshot_id"],
                                    "lake_head_snapshot_id": warehouse.snapshot_id(con)}
        finally:
            con.close()
    state = run_state.read_state(settings)
    warnings = run_state.warnings_for(state) + ([legacy] if legacy else [])
    if not published and _reads_snapshot(settings):
        warnings.append("nothing published yet (the CLI reads the serving snapshot): run `trading scan`")
    lr = state["last_run"]
    info.update(
        symbols=symbols, rejected_rows=rejected, bars=bars, models=tables, snapshot=snap,
        last_run=({k: lr[k] for k in ("run_id", "job", "status")} | ({"dead": lr["dead"]} if lr.get("dead") else {})
                  if lr else None),
        failed_checks=state["failed_checks"], warnings=warnings,
    )
    info["risk_alerts"], risk_problem = _recent_risk_alerts(settings)
    if risk_problem:
        warnings.append(risk_problem)
    if json_out:
        print_json(info)
        return
    console.print(f"[bold]TRADING_HOME[/] {settings.home}")
    if bars:
        from rich.table import Table

        table = Table(title=f"bars ({symbols} symbols, {rejected} rejected rows)", header_style="bold cyan")
        for col in bars[0]:
            table.add_column(col, justify="right" if col in ("symbols", "bars") else "left")
        for row in bars:
            table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()])
        console.print(table)
    if snap and "lake_snapshot_id" in snap:
        console.print(f"the lake at snapshot {snap['lake_head_snapshot_id']}; the API serves snapshot "
                      f"{snap['lake_snapshot_id']} (publish #{snap['sequence']}, {snap['published_at']} UTC)")
    elif snap:
        console.print(f"as of snapshot #{snap['sequence']} published {snap['published_at']} UTC")
    if lr:
        colour = "green" if lr["status"] == "SUCCESS" else "yellow" if lr["status"] in ("STARTED", "STARTING") and not lr.get("dead") else "red"
        shown = f"{lr['status']} (dead)" if lr.get("dead") else lr["status"]
        console.print(f"last run: {lr['job']} {lr['run_id'][:8]} [{colour}]{shown}[/]")
    if info["failed_checks"]:
        console.print("[red]failed checks:[/] " + ", ".join(info["failed_checks"]))
    else:
        console.print("[green]all asset checks passing[/]")
    for w in warnings:
        console.print(f"[bold red]warning:[/] {w}")
    if tables:
        where = "the snapshot" if snap and "lake_snapshot_id" not in snap else "staging/intermediate/marts/ops"
        console.print(f"models: {len(tables)} tables/views in {where}")
    if info["risk_alerts"]:
        from rich.table import Table

        table = Table(title="risk alerts (newest first; all: GET /risk/alerts)", header_style="bold cyan")
        for col in ("id", "session", "account", "level", "message"):
            table.add_column(col)
        for a in info["risk_alerts"]:
            colour = "red" if a["level"] == "breach" else "yellow"
            table.add_row(str(a["id"]), a["session_date"], a["account"], f"[{colour}]{a['level']}[/]", a["message"])
        console.print(table)


def _recent_risk_alerts(settings, limit: int = 10) -> tuple[list[dict], str | None]:
    """The newest recorded risk alerts (trading_pipeline/trading/risk_monitor.py) and a warning if
    the ops store cannot be read; nothing when it does not exist yet."""
    if settings.ops_url is None and not (settings.home / "ops.sqlite").exists():
        return [], None
    from trading_pipeline.trading.store import OpsStore

    try:
        store = OpsStore.from_settings(settings)
        try:
            rows = store.list_risk_alerts(limit=limit, newest_first=True)
        finally:
            store.close()
    except Exception as exc:
        return [], f"risk alerts unavailable (ops store: {type(exc).__name__}: {exc})"
    return [a.public() | {"delivered": a.delivered_at is not None} for a in rows], None


def _csv_text(df: pl.DataFrame) -> str:
    from trading_pipeline.cli.output import nested_as_json

    return nested_as_json(df).write_csv()


# ----------------------------------------------------------------------------- sql on a lake
#
# On the DuckLake warehouse `trading sql` reads the lake itself: every statement sees the last
# committed snapshot (a writer's open transaction is invisible and never waited for), or the
# snapshot `--as-of` pins. Snapshot ids count up by one per commit; `ducklake_expire_snapshots`
# removes old ones, so a gap in the retained ids is history that is gone.

AS_OF_HELP = (
    "Read the DuckLake warehouse as it was: an ISO timestamp (2026-11-28T15:30:00Z; no offset "
    "means UTC, a date alone its 00:00 UTC), a lake snapshot version (digits only: 42), or a "
    "Dagster run id (in full or its first 8+ characters; with its first '-' if those are all "
    "digits) of a run that published a snapshot (the lake_snapshot_id it recorded). Exit 2 if "
    "that snapshot was expired or did not exist. Works with the prompt and --print-attach."
)


def _lake_snapshots(con) -> list[tuple[int, object]]:
    """(id, commit time) of the lake's retained snapshots, oldest first."""
    from trading_pipeline.marketdata import warehouse
    return [(int(i), t) for i, t in con.sql(
        f"SELECT snapshot_id, snapshot_time FROM {warehouse.LAKE_ALIAS}.snapshots() ORDER BY snapshot_id").fetchall()]


def _shown_time(t) -> str:
    from datetime import UTC
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if t is not None else "?"


def _as_of_time(text: str):
    """``text`` as an aware UTC datetime if it is an ISO timestamp, else None."""
    from datetime import UTC, datetime
    try:
        t = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _run_snapshot(settings, ref: str) -> tuple[str, int]:
    """(run id, lake snapshot id) recorded by the Dagster run ``ref`` (its id or a prefix of it):
    the serving snapshot's ``lake_snapshot_id`` (what that run published), else the largest
    one any of its materializations recorded. Exit 2 when there is no such run or it recorded none."""
    import dagster as dg

    from trading_pipeline import runs
    ref = ref.lower()
    if not settings.dagster_home.exists():  # no run ever started from this home (and nothing to create)
        fail(f"--as-of {ref}: no Dagster run with that id: this home has no Dagster instance "
             f"({settings.dagster_home})", code=2)
    inst = runs.instance(settings)
    ids = [ref] if len(ref) == 36 and inst.has_run(ref) else [r for r in inst.get_run_ids() if r.startswith(ref)]
    if not ids:
        fail(f"--as-of {ref}: no Dagster run with that id in {settings.dagster_home}",
             "list runs in the Dagster UI (make up); a run id prefix needs 8+ characters", code=2)
    if len(ids) > 1:
        fail(f"--as-of {ref}: the prefix matches {len(ids)} runs ({', '.join(sorted(ids)[:5])}"
             f"{', ...' if len(ids) > 5 else ''})", "give more characters of the run id", code=2)
    run_id = ids[0]
    served, recorded = None, []
    for entry in inst.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        mat = entry.asset_materialization
        value = getattr(mat.metadata.get("lake_snapshot_id"), "value", None) if mat is not None else None
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        recorded.append(value)
        if mat.asset_key == runs.SERVING:
            served = value
    if served is None and not recorded:
        run = inst.get_run_by_id(run_id)
        fail(f"--as-of {ref}: run {run_id} ({run.job_name if run else '?'}) recorded no lake snapshot: none of "
             "its materializations has lake_snapshot_id (runs that publish the serving snapshot record it)",
             "pick a scan or publish run, or give a timestamp or snapshot version", code=2)
    return run_id, served if served is not None else max(recorded)


def _resolve_as_of(settings, con, as_of: str) -> tuple[int, str]:
    """The lake snapshot version ``--as-of`` names (``con``: the lake at its latest snapshot), and
    how to say it; exit 2 with the reason when it names none, one that was expired, or a time
    before the lake (or its retained history)."""
    import re

    text = as_of.strip()
    when = None if re.fullmatch(r"\d+", text) else _as_of_time(text)
    run_like = re.fullmatch(r"[0-9a-fA-F-]+", text) and not re.fullmatch(r"\d+", text)
    if not re.fullmatch(r"\d+", text) and when is None and not run_like:
        fail(f"--as-of {as_of!r} is not an ISO timestamp, a snapshot version or a Dagster run id",
             "e.g. --as-of 2026-11-28T15:30:00Z, --as-of 42, --as-of <run id or its first 8 characters>", code=2)
    if run_like and when is None and len(text) < 8:
        fail(f"--as-of {as_of!r}: a run id prefix needs at least 8 characters", code=2)
    snaps = _lake_snapshots(con)
    ids = [i for i, _ in snaps]
    times = dict(snaps)
    oldest, latest = snaps[0], snaps[-1]
    retained = f"retained: snapshots {oldest[0]} ({_shown_time(oldest[1])}) to {latest[0]} ({_shown_time(latest[1])})"
    if when is not None:
        before = [(i, t) for i, t in snaps if t <= when]
        shown = when.strftime("%Y-%m-%d %H:%M:%S UTC")
        if not before:
            if oldest[0] == 0:
                fail(f"--as-of {shown} is before the lake existed (its first snapshot is from "
                     f"{_shown_time(oldest[1])})", code=2)
            fail(f"--as-of {shown} is older than the lake's retained history: the snapshots before "
                 f"{oldest[0]} have been expired", retained, code=2)
        version = before[-1][0]
        after = [i for i in ids if i > version]
        if after and after[0] > version + 1:
            fail(f"--as-of {shown}: the snapshots after {version} ({_shown_time(times[version])}) up to "
                 f"{after[0] - 1} have been expired, so the lake as it was then is not retained", retained, code=2)
        return version, f"lake snapshot {version} ({_shown_time(times[version])}), as of {shown}"
    if run_like:
        run_id, version = _run_snapshot(settings, text)
        what = f"run {run_id[:8]}'s lake snapshot {version}"
    else:
        version, what = int(text), f"lake snapshot {int(text)}"
    if version not in times:
        if version > latest[0]:
            fail(f"--as-of {as_of}: there is no {what} yet; the latest is {latest[0]} "
                 f"({_shown_time(latest[1])})", code=2)
        fail(f"--as-of {as_of}: {what} has been expired (ducklake_expire_snapshots)", retained, code=2)
    return version, f"{what} ({_shown_time(times[version])})"


def _open_lake(settings):
    """A read-only connection on the lake at its latest committed snapshot."""
    from trading_pipeline.marketdata import warehouse
    try:
        return warehouse.connect_lake(settings.warehouse_path, read_only=True)
    except FileNotFoundError as exc:  # nothing loaded yet
        fail(str(exc))
    except warehouse.WarehouseLocationError as exc:  # a location that cannot be opened: exit 2
        fail(str(exc), code=2)


def _pin(con, settings, version: int) -> None:
    """Re-attach the lake on ``con`` pinned at ``version`` (read-only): cheaper than a new
    connection, which loads the extensions again."""
    import duckdb

    from trading_pipeline.marketdata import warehouse
    try:
        con.execute("USE memory")
        con.execute(f"DETACH {warehouse.LAKE_ALIAS}")
        con.execute(warehouse.attach_statement(settings.warehouse_path, snapshot_version=version))
        con.execute(f"USE {warehouse.LAKE_ALIAS}")
    except duckdb.Error as exc:
        if "no snapshot found" in str(exc).lower():  # expired between the look-up and now
            fail(f"--as-of: lake snapshot {version} has just been expired", code=2)
        fail(str(warehouse.open_error(str(settings.warehouse_path), exc)), code=2)


def _attach_statements(settings, version: int | None, label: str | None) -> dict:
    """What another DuckDB client runs to read the lake as `trading sql` does (``--print-attach``)."""
    import duckdb

    from trading_pipeline.marketdata import extensions, warehouse
    lk = warehouse.lake(settings.warehouse_path)
    if not lk.exists():
        fail(f"no warehouse at {lk.location}", "run `trading demo` or `trading ingest PATH` first")
    location = lk.location
    if lk.catalog_file is not None:  # absolute: the client may run from anywhere
        location = location[: len(location) - len(lk.catalog)] + str(lk.catalog_file.resolve())
    statements = [
        f"SET extension_directory = {warehouse.sql_literal(str(extensions.extension_directory()))}",
        "SET autoinstall_known_extensions = false",
        "LOAD ducklake",
        *([f"LOAD {lk.catalog_type}"] if lk.catalog_type in ("sqlite", "postgres") else []),
        warehouse.attach_statement(location, read_only=True, snapshot_version=version),
        f"USE {warehouse.LAKE_ALIAS}",
    ]
    return {"warehouse": location, "duckdb_version": duckdb.__version__,
            "extension_directory": str(extensions.extension_directory()), "snapshot_version": version,
            "as_of": label, "statements": [s + ";" for s in statements]}


def _run_query(con, query: str, *, what: str, label: str | None, json_out: bool, csv: bool, limit: int,
               repl: bool = False) -> bool:
    """Run one query on ``con`` and print its result; on a DuckDB error print it (exit 2 unless
    ``repl``) and return False."""
    import duckdb

    try:
        rel = con.sql(query)
        df = rel.pl() if rel is not None else None
    except duckdb.Error as exc:
        where = {"snapshot": "the published snapshot", "lake": label or "the lake (latest committed snapshot)"}.get(
            what, "the warehouse")
        hint = (f"reading {where}; schemas: raw, marts, ops"
                + (", staging, intermediate" if what != "snapshot" else " (staging/intermediate: --live)")
                + "; try: " + ("SHOW ALL TABLES;" if repl else "trading sql \"SHOW ALL TABLES\""))
        if repl:
            err_console.print(f"[bold red]error:[/] {str(exc).splitlines()[0]}", soft_wrap=True)
            err_console.print(f"[yellow]hint:[/] {hint}", soft_wrap=True)
            return False
        fail(str(exc).splitlines()[0], hint, code=2)
    if df is None:  # a statement with no result (SET ...)
        if json_out:
            print_json([])
        return True
    if json_out:
        print_json(df.to_dicts())
    elif csv:
        print(_csv_text(df), end="")
    else:
        if label and not repl:
            console.print(f"as of {label}", soft_wrap=True)
        console.print(frame_table(df, max_rows=limit))
    return True


def _prompt(con, *, what: str, label: str | None, json_out: bool, csv: bool, limit: int) -> None:
    """A small SQL prompt: statements end with ``;`` (several lines allowed), ``.quit`` or EOF
    leaves, an error is printed and the prompt goes on."""
    import contextlib
    import sys

    tty = sys.stdin.isatty()
    if tty:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
    if tty or not (json_out or csv):
        where = label or ("the lake at its latest committed snapshot (each statement sees the newest)"
                          if what == "lake" else "the published snapshot" if what == "snapshot" else "the warehouse")
        err_console.print(f"reading {where}; end statements with ';', .quit to leave", soft_wrap=True)
    name, buffer = ("lake" if what == "lake" else "sql"), []
    while True:
        try:
            line = input("" if not tty else f"{name}> " if not buffer else " " * (len(name) - 1) + "…> ")
            if not buffer and line.strip() in (".quit", ".exit", "\\q"):
                break
            if not buffer and not line.strip():
                continue
            buffer.append(line)
            if line.rstrip().endswith(";"):
                statement, buffer = "\n".join(buffer), []
                _run_query(con, statement, what=what, label=label, json_out=json_out, csv=csv, limit=limit,
                           repl=True)
        except EOFError:
            break
        except KeyboardInterrupt:  # drop the statement being typed (or running), as shells do
            buffer = []
            print()
    if "\n".join(buffer).strip():  # EOF after a statement without its ';'
        _run_query(con, "\n".join(buffer), what=what, label=label, json_out=json_out, csv=csv, limit=limit, repl=True)
    if tty:
        print()


def sql(
    query: Annotated[str | None, typer.Argument(
        help="A SQL query, run read-only. Without one: an interactive prompt (statements end with ';', "
        ".quit or Ctrl-D leaves; also reads statements from a pipe).")] = None,
    json_out: JsonOpt = False,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV (nested values as JSON text).")] = False,
    limit: Annotated[int, typer.Option(help="Rows shown in the table view.")] = 200,
    as_of: Annotated[str | None, typer.Option("--as-of", help=AS_OF_HELP)] = None,
    print_attach: Annotated[bool, typer.Option(
        "--print-attach", help="Print the statements another DuckDB client (the duckdb CLI, Python; DuckDB "
        "of the same version) runs to read the lake as this command does (with --as-of: pinned to that "
        "snapshot); --json prints them as a JSON object. Runs no query.")] = False,
    live: Annotated[bool, typer.Option(
        "--live", help="DuckDB-file warehouse only: read the warehouse file itself (also staging/intermediate, and "
        "what is not published yet). It holds the file's lock while the query runs: a scan or load must wait for "
        "it (up to TRADING_LOCK_WAIT_SECONDS) and fails after. A DuckLake warehouse is always read live.")] = False,
) -> None:
    """Run ad-hoc SQL (read-only) on the warehouse and print a table, JSON or CSV.

    On the DuckLake warehouse (the default) it reads the lake itself: the last committed
    snapshot, never waiting for a writer (a running scan's uncommitted work is not seen), with
    every schema (raw, staging, intermediate, marts, ops); --as-of reads an older snapshot.
    On a DuckDB-file warehouse (TRADING_WAREHOUSE=path.duckdb) it reads the last published
    serving snapshot (raw.bars, raw.symbols, raw.bars_rejected, marts.*, ops.*; --live: the file).
    Tables show one line per row (long cells cut with an ellipsis); --json/--csv give every value.
    """
    from trading_pipeline.marketdata import warehouse

    settings = get_settings()
    if not warehouse.is_lake(settings.warehouse_path):
        if as_of or print_attach:
            fail(f"{'--as-of' if as_of else '--print-attach'} needs the DuckLake warehouse; "
                 f"{settings.warehouse_path} is a {warehouse.describe(settings.warehouse_path)}"
                 + (", which keeps no history" if as_of else ""),
                 "without --as-of it reads the latest published snapshot; `trading warehouse migrate --from PATH` "
                 "moves the file into the lake (then unset TRADING_WAREHOUSE)", code=2)
        con, what = _open_reader(settings, live)
    else:
        con, what = _open_lake(settings), "lake"
    try:
        version, label = _resolve_as_of(settings, con, as_of) if as_of else (None, None)
        if print_attach:
            out = _attach_statements(settings, version, label)
            if json_out:
                print_json(out)
            else:
                note = f", {label}" if label else " (each query sees the latest committed snapshot)"
                print(f"-- DuckDB {out['duckdb_version']}: read {out['warehouse']}{note}")
                print("\n".join(out["statements"]))
            return
        if version is not None:
            _pin(con, settings, version)
        if query is None:
            _prompt(con, what=what, label=label, json_out=json_out, csv=csv, limit=limit)
        else:
            _run_query(con, query, what=what, label=label, json_out=json_out, csv=csv, limit=limit)
    finally:
        con.close()


# ----------------------------------------------------------------------------- scan / rules

def _latest_session(settings, intraday: bool) -> date | None:
    facts = _home_facts(settings)
    return facts["last_daily" if not intraday else "last_intraday"]


def _home_facts(settings) -> dict:
    """What the published snapshot says about the home: symbols (with calendars), stored
    sessions, bar source labels. Empty when nothing is published."""
    from trading_pipeline.serving import snapshot as serving
    facts: dict = {"symbols": {}, "labels": [], "last_daily": None, "last_intraday": None,
                   "first_daily": None, "first_intraday": None}
    try:
        con = serving.open_snapshot(settings.serving_dir)
    except serving.NoSnapshot:
        return facts
    try:
        have = serving.snapshot_tables(con)
        if "raw.symbols" in have:
            facts["symbols"] = dict(con.sql("SELECT symbol, calendar FROM raw.symbols").fetchall())
        for kind in ("daily", "intraday"):
            if f"raw.bars_{kind}" in have:
                first, last = con.sql(f"SELECT min(session_date), max(session_date) FROM raw.bars_{kind}").fetchall()[0]
                facts[f"first_{kind}"], facts[f"last_{kind}"] = first, last
                facts["labels"] += [r[0] for r in con.sql(f"SELECT DISTINCT source FROM raw.bars_{kind}").fetchall()]
    finally:
        con.close()
    return facts


def _stored_sessions(settings, session: date, intraday: bool, symbol: str | None) -> tuple[bool, date | None, date | None]:
    """(bars stored on ``session``, the stored session before it, the one after) from the snapshot."""
    from trading_pipeline.serving import snapshot as serving
    table = "raw.bars_intraday" if intraday else "raw.bars_daily"
    try:
        con = serving.open_snapshot(settings.serving_dir)
    except serving.NoSnapshot:
        return False, None, None
    try:
        if table not in serving.snapshot_tables(con):
            return False, None, None
        where, params = ("AND symbol = ?", [symbol]) if symbol else ("", [])
        row = con.sql(
            f"""SELECT bool_or(session_date = ?), max(session_date) FILTER (WHERE session_date < ?),
                       min(session_date) FILTER (WHERE session_date > ?) FROM {table} WHERE true {where}""",
            params=[session, session, session, *params]).fetchall()[0]
        return bool(row[0]), row[1], row[2]
    finally:
        con.close()


def _nearest(days: list[date], d: date) -> str:
    before = [x for x in days if x < d]
    after = [x for x in days if x > d]
    near = ([before[-1]] if before else []) + ([after[0]] if after else [])
    return " and ".join(x.isoformat() for x in near)


def _scan_refusal(settings, session: date, symbol: str | None, intraday: bool) -> tuple[str | None, str | None, str | None, str]:
    """Check a scan request before any run: (error, hint, source to fetch from or None, why).

    Refused: a day that is not a session of the calendar, a session outside the data the
    home's source has (or, for a file-loaded home, with no stored bars), a symbol neither
    the source nor the home knows."""
    from datetime import UTC, datetime, timedelta

    from trading_pipeline.marketdata import calendars
    from trading_pipeline.marketdata.sources import sample
    from trading_pipeline.marketdata.sources.registry import home_source

    facts = _home_facts(settings)
    source, why = home_source(settings, facts["labels"])
    sym = symbol.upper() if symbol else None
    # the symbol
    if sym:
        known = set(facts["symbols"])
        fixed = source in (None, "sample")  # alpaca/ib/synthetic can fetch any symbol
        if source == "sample":
            known |= set(sample.SampleBarSource(settings.sample_symbols).symbols)
        if fixed and sym not in known:
            listed = sorted(known)
            shown = ", ".join(listed[:12]) + (f" (+{len(listed) - 12} more)" if len(listed) > 12 else "")
            return (f"unknown symbol {sym!r}: not in this home" + ("" if source is None else f" nor in the {source} source"),
                    f"known symbols: {shown}" if listed else "this home has no symbols yet", source, why)
    # the calendar: the symbol's, else the default exchange's
    cal_name = facts["symbols"].get(sym) if sym else None
    try:
        cal_name = cal_name or calendars.calendar_for_exchange(settings.exchange)
    except ValueError:
        cal_name = calendars.DEFAULT_CALENDAR
    today = datetime.now(UTC).date()
    kind = "intraday" if intraday else "daily"
    # the data the scan can have: the sample's dates, the home's stored sessions (nothing to
    # fetch), or any session up to today (a market-data source)
    if source == "sample":
        spans = [(sample.INTRADAY_START, sample.INTRADAY_END), (date(2017, 4, 19), date(2018, 2, 7))] if intraday \
            else [(sample.DAILY_START, sample.DAILY_END)]
        what = f"the bundled sample's {kind} data"
    elif source is None:
        first, last = facts[f"first_{kind}"], facts[f"last_{kind}"]
        if first is None:
            return (f"this home has no {kind} bars and no source to fetch them from ({why})",
                    "load bars with `trading ingest PATH`", source, why)
        spans, what = [(first, last)], f"this home's stored {kind} bars"
    else:
        spans, what = [(date(2000, 1, 3), today)], "the sessions scans cover (up to today)"
    if not any(a <= session <= b for a, b in spans):
        inside = [d for a, b in spans for d in
                  calendars.session_dates(cal_name, max(a, session - timedelta(days=10)) if session > b else a,
                                          b if session > b else min(b, a + timedelta(days=10)))]
        inside = inside or [d for a, b in spans for d in calendars.session_dates(cal_name, a, b)]
        pick = min(inside, key=lambda d: abs((d - session).days)) if inside else None
        span_text = ", ".join(f"{a} .. {b}" for a, b in spans)
        if source is None:
            return (f"no {kind} bars for {session} in this home (it holds {span_text}) and no source to fetch "
                    f"them from ({why})" + (f"; nearest session: {pick}" if pick else ""),
                    "load them with `trading ingest PATH` (or set TRADING_DATA_SOURCE to a market-data source)",
                    source, why)
        return (f"{session} is outside {what} ({span_text})" + (f"; nearest session: {pick}" if pick else ""),
                None, source, why)
    days = calendars.session_dates(cal_name, session - timedelta(days=10), session + timedelta(days=10))
    if cal_name == "24/7":
        days = [d for d in days if d.weekday() < 5]  # scans run per weekday session
    if session not in days:
        return (f"{session} ({session:%A}) is not an {cal_name} session; nearest sessions: {_nearest(days, session)}",
                None, source, why)
    if source is None:
        stored, before, after = _stored_sessions(settings, session, intraday, sym)
        if not stored:
            near = " and ".join(x.isoformat() for x in (before, after) if x)
            return (f"no {kind} bars for {session}{' ' + sym if sym else ''} in this home, and no source to "
                    f"fetch them from ({why})" + (f"; nearest stored sessions: {near}" if near else ""),
                    "load them with `trading ingest PATH` (or set TRADING_DATA_SOURCE to a market-data source)",
                    source, why)
    return None, None, source, why


def _session_signals(settings, session: date, symbol: str | None, intraday: bool) -> pl.DataFrame:
    import polars as pl

    from trading_pipeline.marketdata import warehouse
    con, _ = _open_reader(settings)
    try:
        if "marts.signals" not in _relations(con, "snapshot" if _reads_snapshot(settings) else "warehouse"):
            return pl.DataFrame()
        tf = "timeframe <> '1d'" if intraday else "timeframe = '1d'"
        params: list = [session]
        where = f"session_date = ? AND {tf}"
        if symbol:
            where += " AND symbol = ?"
            params.append(symbol.upper())
        return warehouse.fetch_frame(
            con,
            f"""SELECT symbol, timeframe, ts, kind, direction, round(score, 2) AS score, scan, reason
                FROM marts.signals WHERE {where} ORDER BY score DESC, symbol""",
            params,
        )
    finally:
        con.close()


def scan(
    date_: Annotated[str | None, typer.Option("--date", help="Session to scan (YYYY-MM-DD); default: the latest session in the warehouse.")] = None,
    symbol: Annotated[str | None, typer.Option(help="Only load and show this symbol.")] = None,
    intraday: Annotated[bool, typer.Option("--intraday", help="Scan intraday bars instead of daily.")] = False,
    until: Annotated[str | None, typer.Option(help="Intraday: only bars before this time (naive UTC ISO).")] = None,
    full_tests: Annotated[bool, typer.Option(
        "--full-tests",
        help="Run every dbt data test over all rows (slow on a large history). Default: the "
             "tests check only the rows this scan's build changed (for uniqueness, their keys "
             "against the whole table); a first build tests everything anyway.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Materialize the scan for one session through Dagster (bars → dbt) and print its signals.

    The bars come from the home's own source (recorded at its first load; the bundled sample
    only for an empty or demo home); a home loaded from files is scanned on its stored bars.
    A day that is not a session, outside the data, or an unknown symbol is refused (exit 2)
    before any run. dbt's data tests check the new rows only, unless --full-tests.
    """
    def refuse(message: str, hint: str | None = None) -> None:
        if json_out:
            print_json({"error": message, **({"hint": hint} if hint else {})})
            raise typer.Exit(2)
        fail(message, hint, code=2)

    settings = get_settings()
    if date_:
        try:
            session = date.fromisoformat(date_)
        except ValueError:
            refuse(f"--date must be YYYY-MM-DD, got {date_!r}")
    else:
        session = _latest_session(settings, intraday)
        if session is None:
            refuse("no bars in the warehouse and no --date given", "run `trading demo` or pass --date YYYY-MM-DD")
    error, hint, source, _why = _scan_refusal(settings, session, symbol, intraday)
    if error:
        refuse(error, hint)
    from trading_pipeline import runs
    op = "raw__bars_intraday" if intraday else "raw__bars_daily"
    if source is None:  # a file-loaded home: scan its stored bars, fetch nothing
        job, run_config = ("scan_intraday_stored" if intraday else "scan_daily_stored"), None
    else:
        job = "scan_intraday" if intraday else "scan_daily"
        cfg: dict = {"source": source}
        if symbol:
            cfg["symbols"] = [symbol.upper()]
        if until and intraday:
            cfg["until"] = until
        run_config = {"ops": {op: {"config": cfg}}}
    if full_tests:  # dbt_models' DbtBuildConfig (defs/dbt.py): every data test over all rows
        run_config = {**(run_config or {})}
        run_config["ops"] = {**run_config.get("ops", {}), "dbt_models": {"config": {"full_tests": True}}}
    with progress_bar() as progress:
        task = progress.add_task(f"{job} {session}", total=1)
        t0 = time.perf_counter()
        result = runs.run_job(job, settings, run_config=run_config, start=session)  # tagged with it
        progress.advance(task)
    if not result.success:
        fail(f"scan run {result.run_id} failed: {runs.failure_message(result)}",
             "see the run in the Dagster UI (make up); failed bar checks block the scan on purpose")
    signals = _session_signals(settings, session, symbol, intraday)
    out = {"session": session, "run_id": result.run_id, "source": source or "stored bars",
           "seconds": round(time.perf_counter() - t0, 2),
           "failed_checks": runs.failed_checks(result), "signals": signals.to_dicts()}
    if json_out:
        print_json(out)
        return
    view = signals.select("symbol", "timeframe", "kind", "score", "reason") if signals.height else signals
    console.print(frame_table(view, title=f"signals {session}{' ' + symbol.upper() if symbol else ''} "
                                             f"({'intraday' if intraday else 'daily'}, run {result.run_id[:8]})"))
    if signals.is_empty():
        console.print("no signals for this session")


def rules(
    path: Annotated[Path | None, typer.Option("--file", help="Rules file (default TRADING_RULES_FILE or ./rules.yaml).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the scans in the rules file and validate it (exit 2 with the problem if invalid)."""
    import polars as pl

    from trading_pipeline.scans.rules import RulesError, dbt_vars, load_rules

    settings = get_settings()
    path = path or settings.rules_file
    try:
        loaded = load_rules(path)
    except (RulesError, FileNotFoundError) as exc:
        fail(str(exc), "fix the file; the previous rules stay in force until it validates", code=2)
    scans = dbt_vars(loaded)["scans"]
    if json_out:
        print_json({"file": str(path), "valid": True, "scans": scans})
        return
    rows = []
    for sc in scans:
        params = {k: v for k, v in sc.items()
                  if k not in ("name", "kind", "timeframes", "symbols", "fingerprint", "universe", "universe_rule",
                               "when_sql", "score_sql", "expr_layers") and v is not None}  # compiled SQL: --json
        # a named universe: its name (members per session, `trading universe show`), with its candidates
        universe = "all" if not sc.get("symbols") else ",".join(sc["symbols"])
        if sc.get("universe"):
            universe = sc["universe"] + (f" ({len(sc['symbols'])} candidates)" if sc.get("symbols") else " (stored symbols)")
        rows.append({"scan": sc["name"], "kind": sc["kind"], "timeframes": ",".join(sc["timeframes"]),
                     "universe": universe,
                     "parameters": " ".join(f"{k}={v:.15g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())})
    # the parameters are the point of this table: let them run as long as the line allows, and
    # piped (no terminal, no COLUMNS) as long as they are
    out = console
    if rows and not console.is_terminal and "COLUMNS" not in os.environ:
        from rich.console import Console

        need = sum(max(len(k), *(len(str(r[k])) for r in rows)) + 3 for k in rows[0]) + 1
        out = Console(width=max(console.width, need))
    out.print(frame_table(pl.DataFrame(rows), title=f"{path} (valid, {len(scans)} scans)", width=out.width,
                          max_cell=400))


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(sql)
    app.command()(scan)
    app.command()(rules)
