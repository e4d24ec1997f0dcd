"""Raw bar assets (daily and intraday), session-partitioned, with blocking quality checks."""


from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl

from trading_pipeline import quality, warehouse
from trading_pipeline.bars import INTRADAY_TIMEFRAMES
from trading_pipeline.defs.resources import WarehouseResource
from trading_pipeline.defs.run_logs import run_logging
from trading_pipeline.ingest import Batch, IngestResult, ingest, known_symbols
from trading_pipeline.settings import get_settings
from trading_pipeline.sources.registry import make_source

SESSIONS = dg.TimeWindowPartitionsDefinition(
    cron_schedule="0 0 * * 1-5", start="2000-01-03", fmt="%Y-%m-%d", timezone="UTC", end_offset=1
)
POOL = "duckdb_writer"
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
        tw.start.astimezone(UTC).replace(tzinfo=None),
        tw.end.astimezone(UTC).replace(tzinfo=None),
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
        result = ingest(
            con, batches, window=(start, end), exchange_for=exchange_for,
            name_of=getattr(source, "name_of", None), default_exchange=settings.exchange,
            run_id=context.run_id,
        )
    context.log.info(
        f"event=bars_loaded loaded={result.loaded} rejected={result.rejected} "
        f"rules={result.rejected_by_rule} symbols={len(result.symbols)}"
    )
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

CHECK_GROUPS: dict[str, tuple[str, ...]] = {
    "columns_not_null": ("expect_table_columns_to_match_set", "expect_column_values_to_not_be_null"),
    "positive_prices": ("expect_column_values_to_be_between(open", "expect_column_values_to_be_between(high",
                        "expect_column_values_to_be_between(low", "expect_column_values_to_be_between(close"),
    "high_low_consistent": ("expect_column_pair_values_a_to_be_greater_than_b",),
    "volume_nonnegative": ("expect_column_values_to_be_between(volume",),
    "unique_keys": ("expect_compound_columns_to_be_unique",),
    "in_session": ("expect_column_values_to_be_in_set(in_session",),
    "no_future_bars": ("expect_column_values_to_be_between(ts",),
}


def _checked_window(context) -> tuple[datetime, datetime] | None:
    tags = context.run.tags
    start = tags.get("dagster/asset_partition_range_start") or tags.get("dagster/partition")
    end = tags.get("dagster/asset_partition_range_end") or tags.get("dagster/partition")
    if not start:
        return None
    s = SESSIONS.time_window_for_partition_key(start).start
    e = SESSIONS.time_window_for_partition_key(end).end
    return s.astimezone(UTC).replace(tzinfo=None), e.astimezone(UTC).replace(tzinfo=None)


def _suite_results(context, wh: WarehouseResource, table: str, asset: dg.AssetKey):
    window = _checked_window(context)
    con = warehouse.connect(wh.resolved_path(), read_only=True)
    try:
        where, params = ("WHERE ts >= ? AND ts < ?", list(window)) if window else ("", [])
        df = warehouse.fetch_frame(
            con,
            f"SELECT symbol, timeframe, ts, session_date, open, high, low, close, volume "
            f"FROM {table} {where}", params,
        )
        cal = {s: c for s, (_, c) in known_symbols(con).items()}
    finally:
        con.close()
    results = quality.run_suite(df, cal)
    for check, prefixes in CHECK_GROUPS.items():
        mine = [r for r in results if r["expectation"].startswith(prefixes)]
        failed = [r for r in mine if not r["success"]]
        yield dg.AssetCheckResult(
            asset_key=asset,
            check_name=check,
            passed=not failed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "rows_checked": dg.MetadataValue.int(df.height),
                "window": dg.MetadataValue.text(f"{window[0]} .. {window[1]}" if window else "all"),
                "expectations": dg.MetadataValue.int(len(mine)),
                "failures": dg.MetadataValue.json(failed),
            },
        )


def _check_specs(asset: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=True,
                          description=f"great-expectations bar suite: {name.replace('_', ' ')}")
        for name in CHECK_GROUPS
    ]


@dg.multi_asset_check(specs=_check_specs(DAILY), pool=POOL, name="bars_daily_quality")
def bars_daily_quality(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
    yield from _suite_results(context, warehouse, "raw.bars_daily", DAILY)


@dg.multi_asset_check(specs=_check_specs(INTRADAY), pool=POOL, name="bars_intraday_quality")
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
