"""Raw bar assets (daily and intraday), session-partitioned, with blocking quality checks."""


import warnings
from datetime import datetime, timedelta

import dagster as dg
import polars as pl

# the record Dagster keeps of which materialization a check result is about; not exported
# from `dagster` in 1.13 (AssetCheckResult fills it itself, but it cannot name a partition)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData as TargetMaterialization,
)

from trading_pipeline import logs
from trading_pipeline.defs.resources import WAREHOUSE_WRITERS, WarehouseResource
from trading_pipeline.defs.run_logs import run_logging
from trading_pipeline.marketdata import quality, warehouse
from trading_pipeline.marketdata.bars import INTRADAY_TIMEFRAMES, naive_utc
from trading_pipeline.marketdata.ingest import (
    Batch,
    IngestResult,
    LoadCheckError,
    ingest,
    known_symbols,
)
from trading_pipeline.marketdata.sources.registry import make_source
from trading_pipeline.settings import get_settings

SESSIONS = dg.TimeWindowPartitionsDefinition(
    cron_schedule="0 0 * * 1-5", start="2000-01-03", fmt="%Y-%m-%d", timezone="UTC", end_offset=1
)
POOL = WAREHOUSE_WRITERS
DAILY = dg.AssetKey(["raw", "bars_daily"])
INTRADAY = dg.AssetKey(["raw", "bars_intraday"])


class BarsConfig(dg.Config):
    """Where a load takes its bars from. Empty fields fall back to TRADING_* settings."""

    source: str = ""
    path: str = ""
    symbols: list[str] = []
    synthetic_symbols: int = -1
    timeframes: list[str] = []
    timezone: str = ""
    exchange: str = ""
    ignore_extra_columns: bool = False
    until: str = ""  # ISO time (naive UTC): load only bars that start before it (intraday scans)


def _window(context) -> tuple[datetime, datetime]:
    tw = context.partition_time_window
    return (
        naive_utc(tw.start),
        naive_utc(tw.end),
    )


def _load(context, config: BarsConfig, wh: WarehouseResource, intraday: bool) -> IngestResult:
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
    start, end = _window(context)
    if config.until:
        end = min(end, datetime.fromisoformat(config.until).replace(tzinfo=None))
    symbols = config.symbols or None
    batches: list[Batch] = []
    if name == "files":
        for pf in source.parse():  # type: ignore[attr-defined]
            if (pf.timeframe != "1d") == intraday:
                batches.append(Batch(pf.path.name, pf.bars))
    else:
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
                con, batches, window=(start, end), exchange_for=exchange_for,
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
    return result


def _materialization(result: IngestResult) -> dg.MaterializeResult:
    md = {
        "rows_loaded": dg.MetadataValue.int(result.loaded),
        "rows_rejected": dg.MetadataValue.int(result.rejected),
        "symbols": dg.MetadataValue.int(len(result.symbols)),
        "rejected_by_rule": dg.MetadataValue.json(result.rejected_by_rule),
        "by_timeframe": dg.MetadataValue.json(result.by_timeframe),
    }
    if result.rejections is not None and result.rejections.height:
        sample = result.rejections.head(20).select("source", "row_number", "symbol", "rule", "reason")
        md["rejections_sample"] = dg.MetadataValue.md(_markdown(sample))
    return dg.MaterializeResult(metadata=md)


def _markdown(df: pl.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in df.iter_rows())


@dg.asset(
    key=DAILY,
    partitions_def=SESSIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=POOL,
    group_name="bars",
    kinds={"duckdb", "polars"},
    description="Daily OHLCV bars, one row per (symbol, timeframe, ts); idempotent upsert. "
    "Rows failing the quality rules go to raw.bars_rejected with a reason.",
)
def bars_daily(context: dg.AssetExecutionContext, config: BarsConfig, warehouse: WarehouseResource):
    return _materialization(_load(context, config, warehouse, intraday=False))


@dg.asset(
    key=INTRADAY,
    partitions_def=SESSIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=POOL,
    group_name="bars",
    kinds={"duckdb", "polars"},
    description="Intraday OHLCV bars (1m..1h), one row per (symbol, timeframe, ts), partitioned "
    "by session; idempotent upsert with rejected rows recorded.",
)
def bars_intraday(context: dg.AssetExecutionContext, config: BarsConfig, warehouse: WarehouseResource):
    return _materialization(_load(context, config, warehouse, intraday=True))


# ---- blocking quality checks: the great-expectations suite on what is stored ----------

CHECK_GROUPS = quality.CHECK_GROUPS  # one blocking check per rule of the suite


def _checked_partitions(context) -> list[str]:
    """The session partitions this run checks, in order ([] when the run has no partition:
    then the whole table is checked and the checks report one unpartitioned result)."""
    if context.has_partition_key or context.has_partition_key_range:
        return list(context.partition_keys)
    return []


def _target_materializations(context, asset: dg.AssetKey, keys: list[str]) -> dict:
    """The latest materialization of each partition in ``keys`` (what each check result is
    about), as Dagster records it for a check result: the UI shows a partition's check as
    current only while it targets that partition's latest materialization."""
    latest = context.instance.event_log_storage.get_latest_storage_id_by_partition(
        asset, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=set(keys)
    )
    if not latest:
        return {}
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, storage_ids=list(latest.values())), limit=len(latest)
    ).records
    return {
        r.partition_key: TargetMaterialization(storage_id=r.storage_id, run_id=r.run_id, timestamp=r.timestamp)
        for r in records
    }


def _failures_by_partition(failed: list[dict], part: pl.Series, df: pl.DataFrame, keys: list[str]) -> dict:
    """Split the failed expectations of a check by the session partition of each failing row.

    Every expectation but the column set is evaluated row by row (uniqueness is per
    (symbol, timeframe, ts), so duplicates share a session): a row breaks it in exactly one
    partition, and a partition with no failing row passed. An expectation on the table as
    a whole (or one that failed without naming rows) fails every partition checked.
    """
    out: dict[str, list[dict]] = {k: [] for k in keys}
    for r in failed:
        rows = r.get("unexpected_rows")
        base = {"expectation": r["expectation"], "success": False}
        if not rows:
            for k in keys:
                out[k].append(_summary(r))
            continue
        examples = dict(zip(r.get("example_rows") or [], r["unexpected_examples"], strict=False))
        by_key: dict[str, list[int]] = {}
        for row, p in zip(rows, part.gather(rows).to_list(), strict=True):
            by_key.setdefault(keys[p], []).append(row)
        for k, mine in by_key.items():
            bars = df[mine[:5]].select("symbol", "timeframe", "ts").iter_rows()
            out[k].append({
                **base, "unexpected_count": len(mine),
                "unexpected_examples": [examples[i] for i in mine if i in examples],
                "bars": [f"{s} {tf} {ts}" for s, tf, ts in bars],
            })
    return out


def _suite_results(context, wh: WarehouseResource, table: str, asset: dg.AssetKey):
    """Run the GX suite on the stored bars of the run's sessions and report each check.

    A run of several sessions (a single-run backfill) checks them in one pass but records
    one result per check *and session partition*: the checks are partitioned like the
    asset, and Dagster plans one execution per partition of the run; each one is resolved
    here as passed or failed for the bars of that session. ``AssetCheckResult`` cannot name
    a partition (1.13), so the results are yielded as ``AssetCheckEvaluation`` events with
    the check's output; a failed one is blocking just the same (the step fails after
    reporting them all, so nothing downstream runs).
    """
    keys = _checked_partitions(context)
    window = None
    if keys:
        window = (naive_utc(SESSIONS.time_window_for_partition_key(keys[0]).start),
                  naive_utc(SESSIONS.time_window_for_partition_key(keys[-1]).end))
    run_id = context.op_execution_context.run_id
    targets = _target_materializations(context, asset, keys) if keys else {}
    # a load (a run that stores bars and feeds nothing else, e.g. `trading ingest`) judges
    # what it wrote: the stored bars of the symbols it wrote (raw.bar_loads, recorded in the
    # load's transaction) in its sessions, never other symbols sharing those sessions. A run
    # whose bars feed other assets (a scan: dbt reads every stored bar) gates them on every
    # stored bar of its sessions, and so does a run of the checks alone.
    feeds_others = bool(context.op_execution_context.job_def.asset_layer.selected_asset_keys - {DAILY, INTRADAY})
    loaded_here = not feeds_others and (any(t.run_id == run_id for t in targets.values()) or (
        not keys and _materialized_in_run(context, asset)))
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
        df = warehouse.fetch_frame(
            con,
            f"SELECT symbol, timeframe, ts, session_date, open, high, low, close, volume "
            f"FROM {table} {where}", params,
        )
        cal = {s: c for s, (_, c) in known_symbols(con).items()}
    finally:
        con.close()
    results = quality.run_suite(df, cal)
    if not keys:
        for check, prefixes in CHECK_GROUPS.items():
            mine = [r for r in results if r["expectation"].startswith(prefixes)]
            failed = [r for r in mine if not r["success"]]
            yield dg.AssetCheckResult(
                asset_key=asset, check_name=check, passed=not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata=_metadata(df.height, "all", len(mine), [_summary(r) for r in failed], scope),
            )
        return
    windows = [SESSIONS.time_window_for_partition_key(k) for k in keys]
    starts = pl.Series([naive_utc(w.start) for w in windows], dtype=pl.Datetime("us"))
    # each row's session: the index in keys of the last partition starting at or before it
    part = starts.search_sorted(df["ts"].cast(pl.Datetime("us")), side="right").cast(pl.Int64) - 1
    rows_in = part.value_counts().rows() if df.height else []
    counts = {keys[p]: n for p, n in rows_in}
    checks_def = context.op_execution_context.assets_def
    for check, prefixes in CHECK_GROUPS.items():
        mine = [r for r in results if r["expectation"].startswith(prefixes)]
        failed = _failures_by_partition([r for r in mine if not r["success"]], part, df, keys)
        spec = CHECK_SPECS[asset][check]
        # the check's output (as AssetCheckResult would yield it): what downstream steps wait on
        yield dg.Output(None, output_name=checks_def.get_output_name_for_asset_check_key(spec.key))
        for k, w in zip(keys, windows, strict=True):
            yield dg.AssetCheckEvaluation(
                asset_key=asset, check_name=check, passed=not failed[k],
                metadata=_metadata(counts.get(k, 0), f"{naive_utc(w.start)} .. {naive_utc(w.end)}",
                                   len(mine), failed[k], scope),
                target_materialization_data=targets.get(k),
                severity=dg.AssetCheckSeverity.ERROR,
                blocking=spec.blocking,
                partition=k,
            )


def _summary(result: dict) -> dict:
    """A failed expectation as the check's metadata shows it (without the row positions)."""
    return {k: v for k, v in result.items() if k not in ("unexpected_rows", "example_rows")}


def _materialized_in_run(context, asset: dg.AssetKey) -> bool:
    """Whether this run materialized ``asset`` (an unpartitioned run)."""
    records = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset), limit=1).records
    return bool(records) and records[0].run_id == context.op_execution_context.run_id


def _metadata(rows: int, window: str, expectations: int, failures: list[dict], scope: str) -> dict:
    return {
        "rows_checked": dg.MetadataValue.int(rows),
        "window": dg.MetadataValue.text(window),
        "scope": dg.MetadataValue.text(scope),
        "expectations": dg.MetadataValue.int(expectations),
        "failures": dg.MetadataValue.json(failures),
    }


def _check_specs(asset: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    # partitioned like the asset: a run over a range of sessions plans (and here resolves)
    # one execution per check and session, which is what the UI shows per partition
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # partitions_def on a check: preview in 1.13
        return [
            dg.AssetCheckSpec(name, asset=asset, blocking=True, partitions_def=SESSIONS,
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
    partitions_def=SESSIONS,
    description="Load daily and intraday bars for a range of sessions, then run the bar checks.",
    config=run_logging(),
)
ingest_daily_job = dg.define_asset_job(
    "ingest_daily_bars", selection=dg.AssetSelection.assets(DAILY) - FRESHNESS, partitions_def=SESSIONS,
    config=run_logging(),
)
ingest_intraday_job = dg.define_asset_job(
    "ingest_intraday_bars", selection=dg.AssetSelection.assets(INTRADAY) - FRESHNESS, partitions_def=SESSIONS,
    config=run_logging(),
)
