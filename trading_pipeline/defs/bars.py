"""Raw bar assets (daily and intraday) with blocking quality checks.

The bar assets are not partitioned: a run loads a window of sessions given in its config
(``start``/``end``; a schedule's run one session, ``trading ingest`` a file's whole range,
any length of history) as one materialization, and each bar check is evaluated once per
run over what it loaded, its failures naming their sessions and bars. So a run's cost
grows with its bars, not with its sessions (a partition per session cost Dagster a
materialization and seven check records per session: 10 bars/s on a long history).
"""


from datetime import date, datetime, timedelta

import dagster as dg
import polars as pl

from trading_pipeline import logs
from trading_pipeline.defs.resources import WAREHOUSE_WRITERS, WarehouseResource
from trading_pipeline.defs.run_logs import run_logging
from trading_pipeline.marketdata import quality, warehouse
from trading_pipeline.marketdata.bars import INTRADAY_TIMEFRAMES
from trading_pipeline.marketdata.calendars import calendar_start, session_of
from trading_pipeline.marketdata.ingest import (
    Batch,
    IngestResult,
    LoadCheckError,
    ingest,
    known_symbols,
)
from trading_pipeline.marketdata.sources.registry import make_source
from trading_pipeline.settings import get_settings

POOL = WAREHOUSE_WRITERS
DAILY = dg.AssetKey(["raw", "bars_daily"])
INTRADAY = dg.AssetKey(["raw", "bars_intraday"])
# run tags: the sessions a run loads (the UI's run list shows and filters by them)
START_TAG, END_TAG, SESSION_TAG = "trading/start", "trading/end", "trading/session"


class BarsConfig(dg.Config):
    """Where a load takes its bars from, and which sessions. Empty fields fall back to
    TRADING_* settings; with no ``start``/``end`` a source is asked for its latest session
    (today's, or Friday's at a weekend) and a folder of files loads all of its bars."""

    source: str = ""
    path: str = ""
    symbols: list[str] = []
    synthetic_symbols: int = -1
    timeframes: list[str] = []
    timezone: str = ""
    exchange: str = ""
    ignore_extra_columns: bool = False
    start: str = ""  # first session to load (YYYY-MM-DD); empty: ``end``
    end: str = ""  # last session to load (YYYY-MM-DD, inclusive); empty: ``start``
    until: str = ""  # ISO time (naive UTC): load only bars that start before it (intraday scans)


def session_window(start: date, end: date) -> tuple[datetime, datetime]:
    """Naive-UTC bounds (start inclusive, end exclusive) of sessions ``start``..``end``: a
    Friday's window runs to Monday 00:00, so weekend bars (24/7 markets) load with it."""
    stop = end + timedelta(days=1)
    while stop.weekday() >= 5:
        stop += timedelta(days=1)
    return datetime.combine(session_of(start), datetime.min.time()), datetime.combine(stop, datetime.min.time())


def _window(config: BarsConfig, files: bool) -> tuple[datetime, datetime] | None:
    """The run's load window from its config (None: a folder of files, all of it)."""
    try:
        start = date.fromisoformat(config.start) if config.start else None
        end = date.fromisoformat(config.end) if config.end else None
    except ValueError as exc:
        raise dg.Failure(f"start/end must be YYYY-MM-DD: {exc}", allow_retries=False) from None
    if start is None and end is None:
        if files:
            return None
        start = end = session_of(datetime.now().date())
    start, end = start or end, end or start
    if start > end:
        raise dg.Failure(f"start {start} is after end {end}", allow_retries=False)
    first = calendar_start()
    if start < first:
        raise dg.Failure(f"start {start} is before {first}, the earliest date this platform holds; "
                         "set TRADING_HISTORY_START to an earlier date to load it", allow_retries=False)
    return session_window(start, end)


def _load(context, config: BarsConfig, wh: WarehouseResource, intraday: bool) -> tuple[IngestResult, tuple | None]:
    settings = get_settings()
    name = config.source or settings.data_source
    file_options = {"ignore_extra": config.ignore_extra_columns}
    if config.timezone:
        file_options["tz"] = config.timezone
    source = make_source(
        name, settings, path=config.path or None,
        synthetic_symbols=None if config.synthetic_symbols < 0 else config.synthetic_symbols,
        file_options=file_options,
    )
    window = _window(config, files=name == "files")
    if config.until:
        until = datetime.fromisoformat(config.until).replace(tzinfo=None)
        window = (window[0], min(window[1], until)) if window else (datetime.min, until)
    symbols = config.symbols or None
    batches: list[Batch] = []
    if name == "files":
        for pf in source.parse():  # type: ignore[attr-defined]
            if (pf.timeframe != "1d") == intraday:
                batches.append(Batch(pf.path.name, pf.bars))
    else:
        assert window is not None
        start, end = window
        tfs = config.timeframes or (
            [t for t in getattr(source, "timeframes", lambda: INTRADAY_TIMEFRAMES)() if t != "1d"]
            if intraday else ["1d"]
        )
        for tf in tfs:
            bars = source.fetch_bars(symbols, start.date(), (end - timedelta(microseconds=1)).date(), tf)
            context.log.info(f"fetched {bars.height} {tf} bars from {name}")
            batches.append(Batch(f"{name}:{tf}", bars))
    exchange_for = getattr(source, "exchange_for", None)
    if config.exchange:
        exchange_for = lambda _s: config.exchange  # noqa: E731
    with warehouse.writer(wh.resolved_path()) as con:
        try:
            result = ingest(
                con, batches, window=window, exchange_for=exchange_for,
                name_of=getattr(source, "name_of", None), default_exchange=settings.exchange,
                run_id=context.run_id,
            )
        except LoadCheckError as exc:  # rolled back: the run fails with nothing stored
            raise dg.Failure(
                description=str(exc), allow_retries=False,
                metadata={"check_failures": dg.MetadataValue.json(exc.failures),
                          "rows_stored": dg.MetadataValue.int(0)},
            ) from None
    logs.run_event(context.log, "bars_loaded", loaded=result.loaded, rejected=result.rejected,
                   rules=result.rejected_by_rule, symbols=len(result.symbols))
    return result, window


def _materialization(result: IngestResult, window: tuple[datetime, datetime] | None) -> dg.MaterializeResult:
    md = {
        "rows_loaded": dg.MetadataValue.int(result.loaded),
        "rows_rejected": dg.MetadataValue.int(result.rejected),
        "symbols": dg.MetadataValue.int(len(result.symbols)),
        "rejected_by_rule": dg.MetadataValue.json(result.rejected_by_rule),
        "by_timeframe": dg.MetadataValue.json(result.by_timeframe),
        # what the run loaded (its checks judge the same window): naive UTC, end exclusive
        "window": dg.MetadataValue.text(_window_text(window)),
    }
    if window is not None:
        md["window_start"] = dg.MetadataValue.text(window[0].isoformat())
        md["window_end"] = dg.MetadataValue.text(window[1].isoformat())
    if result.verified:  # the suite's pass before the commit; the run's checks may reuse it
        md["suite_verified"] = dg.MetadataValue.json(result.verified)
    if result.rejections is not None and result.rejections.height:
        sample = result.rejections.head(20).select("source", "row_number", "symbol", "rule", "reason")
        md["rejections_sample"] = dg.MetadataValue.md(_markdown(sample))
    return dg.MaterializeResult(metadata=md)


def _window_text(window: tuple[datetime, datetime] | None) -> str:
    return "all" if window is None else f"{window[0]} .. {window[1]}"


def _markdown(df: pl.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in df.iter_rows())


@dg.asset(
    key=DAILY,
    pool=POOL,
    group_name="bars",
    kinds={"duckdb", "polars"},
    description="Daily OHLCV bars, one row per (symbol, timeframe, ts); idempotent upsert. "
    "Rows failing the quality rules go to raw.bars_rejected with a reason.",
)
def bars_daily(context: dg.AssetExecutionContext, config: BarsConfig, warehouse: WarehouseResource):
    return _materialization(*_load(context, config, warehouse, intraday=False))


@dg.asset(
    key=INTRADAY,
    pool=POOL,
    group_name="bars",
    kinds={"duckdb", "polars"},
    description="Intraday OHLCV bars (1m..1h), one row per (symbol, timeframe, ts); idempotent "
    "upsert with rejected rows recorded.",
)
def bars_intraday(context: dg.AssetExecutionContext, config: BarsConfig, warehouse: WarehouseResource):
    return _materialization(*_load(context, config, warehouse, intraday=True))


# ---- blocking quality checks: the great-expectations suite on what is stored ----------

CHECK_GROUPS = quality.CHECK_GROUPS  # one blocking check per rule of the suite


def _run_materialization(context, asset: dg.AssetKey):
    """This run's materialization of ``asset`` (None: a run of the checks alone)."""
    records = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset), limit=1).records
    if records and records[0].run_id == context.op_execution_context.run_id:
        return records[0].asset_materialization
    return None


def _failures(failed: list[dict], df: pl.DataFrame) -> list[dict]:
    """The failed expectations of a check, each with the sessions and example bars of its
    failing rows (an expectation on the table as a whole names no row)."""
    out = []
    for r in failed:
        rows = r.get("unexpected_rows")
        entry = _summary(r)
        if rows:
            bad = df[rows]
            entry["sessions"] = sorted({session_of(t.date()).isoformat() for t in bad["ts"].drop_nulls().to_list()})
            entry["bars"] = [f"{s} {tf} {ts}" for s, tf, ts in bad.head(5).select("symbol", "timeframe", "ts").iter_rows()]
        out.append(entry)
    return out


def _suite_results(context, wh: WarehouseResource, table: str, asset: dg.AssetKey):
    """Run the GX suite on the stored bars of the run's window and report each check once.

    The window is the one this run's load recorded (a run of the checks alone judges the
    whole table). A load (a run that stores bars and feeds nothing else, e.g. `trading
    ingest`) judges what it wrote: the stored bars of the symbols it wrote (raw.bar_loads,
    recorded in the load's transaction) in its window, never other symbols sharing those
    sessions. A run whose bars feed other assets (a scan: dbt reads every stored bar) gates
    them on every stored bar of its window. A failed check is blocking: nothing downstream
    runs.
    """
    run_id = context.op_execution_context.run_id
    mat = _run_materialization(context, asset)
    md = mat.metadata if mat is not None else {}
    window = ((datetime.fromisoformat(md["window_start"].value), datetime.fromisoformat(md["window_end"].value))
              if "window_start" in md else None)
    feeds_others = bool(context.op_execution_context.job_def.asset_layer.selected_asset_keys - {DAILY, INTRADAY})
    loaded_here = not feeds_others and mat is not None
    con = warehouse.connect(wh.resolved_path(), read_only=True)
    try:
        conds, params = (["ts >= ?", "ts < ?"], list(window)) if window else ([], [])
        scope = "all symbols"
        if loaded_here:
            has_loads = con.sql("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw' "
                                "AND table_name = 'bar_loads'").fetchall()[0][0]
            tf_cond = "timeframe = '1d'" if asset == DAILY else "timeframe <> '1d'"
            conds.append(f"symbol IN (SELECT symbol FROM raw.bar_loads WHERE run_id = ? AND {tf_cond})"
                         if has_loads else "FALSE")
            params += [run_id] if has_loads else []
            scope = "symbols loaded by this run"
        where = ("WHERE " + " AND ".join(conds)) if conds else ""
        reused = _verified_by_load(con, md, asset, table, where, params) if loaded_here else None
        if reused is not None:
            rows, counts = reused
        else:
            df = warehouse.fetch_frame(
                con,
                f"SELECT symbol, timeframe, ts, session_date, open, high, low, close, volume "
                f"FROM {table} {where}", params,
            )
            cal = {s: c for s, (_, c) in known_symbols(con).items()}
    finally:
        con.close()
    if reused is not None:
        # the load judged exactly these stored rows inside its transaction (a failure would have
        # rolled it back): report that verdict instead of running the same suite twice
        for check in CHECK_GROUPS:
            md_out = _metadata(rows, _window_text(window), counts.get(check, 0), [], scope)
            md_out["verified"] = dg.MetadataValue.text(
                f"by the load step inside its transaction, before the commit, on the same {rows:,} stored rows")
            yield dg.AssetCheckResult(asset_key=asset, check_name=check, passed=True,
                                      severity=dg.AssetCheckSeverity.ERROR, metadata=md_out)
        return
    results = quality.run_suite(df, cal)
    for check, prefixes in CHECK_GROUPS.items():
        mine = [r for r in results if r["expectation"].startswith(prefixes)]
        failed = [r for r in mine if not r["success"]]
        yield dg.AssetCheckResult(
            asset_key=asset, check_name=check, passed=not failed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=_metadata(df.height, _window_text(window), len(mine), _failures(failed, df), scope),
        )


def _verified_by_load(con, md: dict, asset: dg.AssetKey, table: str, where: str,
                      params: list) -> tuple[int, dict[str, int]] | None:
    """The load step's pre-commit suite verdict for this asset, when it judged exactly the rows
    this check would (``suite_verified`` metadata; its rows are a subset of the check's scope, so
    equal counts mean the same rows): (rows, expectations per check group). None: run the suite."""
    verified = md["suite_verified"].value if "suite_verified" in md else None
    if not isinstance(verified, dict):
        return None
    mine = {tf: v for tf, v in verified.items() if (tf == "1d") == (asset == DAILY)}
    rows = sum(int(v.get("rows", 0)) for v in mine.values())
    if not mine or rows == 0:
        return None
    stored = con.execute(f"SELECT count(*) FROM {table} {where}", params).fetchone()[0]
    if stored != rows:
        return None
    counts: dict[str, int] = {}
    for v in mine.values():
        for check, n in (v.get("expectations") or {}).items():
            counts[check] = max(counts.get(check, 0), int(n))
    return (rows, counts) if all(counts.get(c) for c in CHECK_GROUPS) else None


def _summary(result: dict) -> dict:
    """A failed expectation as the check's metadata shows it (without the row positions)."""
    return {k: v for k, v in result.items() if k not in ("unexpected_rows", "example_rows")}


def _metadata(rows: int, window: str, expectations: int, failures: list[dict], scope: str) -> dict:
    return {
        "rows_checked": dg.MetadataValue.int(rows),
        "window": dg.MetadataValue.text(window),
        "scope": dg.MetadataValue.text(scope),
        "expectations": dg.MetadataValue.int(expectations),
        "failures": dg.MetadataValue.json(failures),
    }


def _check_specs(asset: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=True,
                          description=f"great-expectations bar suite: {name.replace('_', ' ')}")
        for name in CHECK_GROUPS
    ]


CHECK_SPECS = {a: {s.name: s for s in _check_specs(a)} for a in (DAILY, INTRADAY)}


@dg.multi_asset_check(specs=list(CHECK_SPECS[DAILY].values()), pool=POOL, name="bars_daily_quality")
def bars_daily_quality(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
    yield from _suite_results(context, warehouse, "raw.bars_daily", DAILY)


@dg.multi_asset_check(specs=list(CHECK_SPECS[INTRADAY].values()), pool=POOL, name="bars_intraday_quality")
def bars_intraday_quality(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
    yield from _suite_results(context, warehouse, "raw.bars_intraday", INTRADAY)


# freshness checks (defs/freshness.py) run in their own job: keep them out of loads and scans
FRESHNESS = dg.AssetSelection.checks(
    dg.AssetCheckKey(DAILY, "bars_daily_fresh"), dg.AssetCheckKey(dg.AssetKey(["marts", "signals"]), "signals_fresh")
)

ingest_bars_job = dg.define_asset_job(
    "ingest_bars",
    selection=dg.AssetSelection.assets(DAILY, INTRADAY) - FRESHNESS,
    description="Load daily and intraday bars for a range of sessions (config start/end), then run "
    "the bar checks.",
    config=run_logging(),
)
ingest_daily_job = dg.define_asset_job(
    "ingest_daily_bars", selection=dg.AssetSelection.assets(DAILY) - FRESHNESS,
    config=run_logging(),
)
ingest_intraday_job = dg.define_asset_job(
    "ingest_intraday_bars", selection=dg.AssetSelection.assets(INTRADAY) - FRESHNESS,
    config=run_logging(),
)
