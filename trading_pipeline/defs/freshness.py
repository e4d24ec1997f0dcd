"""Freshness checks: are the daily bars current, and were the signals built after them?

* ``raw/bars_daily:bars_daily_fresh``: the newest daily bar is on (or after) the last
  completed XNYS session.
* ``marts/signals:signals_fresh``: ``marts/signals`` was materialized after the newest daily
  bar was ingested (so the signals a trader sees include it).

Stale data is a failed check in the Dagster UI with how old the data is. The checks are not
blocking (stale is not bad data: nothing downstream should stop) and they run in their own
``freshness_checks`` job, scheduled by ``freshness_daily`` each weekday evening. The bundled
sample ends in 2013, so with it these checks fail by design; their message says so, and the
schedule starts STOPPED when ``TRADING_DATA_SOURCE=sample``.

Dagster pulls every check on an asset into any asset job that selects that asset (the
scan and ingest jobs select ``raw/bars_daily`` and the dbt models). Those jobs should
subtract :data:`FRESHNESS_CHECKS` from their selection; until they do, a freshness check
that finds itself in a run that materializes assets yields no result (shown as skipped)
instead of failing the scan, and evaluates only in check-only runs: the
``freshness_checks`` job, or "Execute" on the check in the UI.
"""

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from trading_pipeline import logs
from trading_pipeline.defs.resources import WAREHOUSE_WRITERS, WarehouseResource
from trading_pipeline.defs.run_logs import run_logging, with_run_logging
from trading_pipeline.marketdata import calendars, warehouse
from trading_pipeline.marketdata.bars import naive_utc
from trading_pipeline.settings import get_settings

POOL = WAREHOUSE_WRITERS
CALENDAR = calendars.DEFAULT_CALENDAR
DAILY = dg.AssetKey(["raw", "bars_daily"])
SIGNALS = dg.AssetKey(["marts", "signals"])
BARS_CHECK = "bars_daily_fresh"
SIGNALS_CHECK = "signals_fresh"
JOB_NAME = "freshness_checks"
# upsert_bars stamps ingested_at with now()::TIMESTAMP, i.e. in the writer's local time zone
# (the same default this reader's session has): convert to naive UTC before comparing it with
# Dagster's (UTC) materialization times
INGESTED_AT_UTC = "timezone('UTC', max(ingested_at)::TIMESTAMPTZ)"


def last_completed_session(now: datetime, calendar: str = CALENDAR) -> date:
    """The newest session of ``calendar`` whose close is at or before ``now`` (tz-aware)."""
    now_utc = naive_utc(now)
    recent = calendars.sessions(calendar, now_utc.date() - timedelta(days=30), now_utc.date())
    closed = recent.filter(recent["close_utc"] <= now_utc)
    if closed.height == 0:
        raise ValueError(f"no completed {calendar} session in the 30 days before {now_utc:%Y-%m-%d}")
    return closed["session_date"][-1]


def sessions_between(after: date, upto: date, calendar: str = CALENDAR) -> int:
    """How many sessions of ``calendar`` lie in (after, upto]."""
    if upto <= after:
        return 0
    return len(calendars.session_dates(calendar, after + timedelta(days=1), upto))


def bars_freshness(con, now: datetime, calendar: str = CALENDAR) -> tuple[bool, str, dict]:
    """(passed, message, metadata) for the newest daily bar against the calendar."""
    expected = last_completed_session(now, calendar)
    row = warehouse.fetch_one(
        con,
        f"""SELECT max(session_date), {INGESTED_AT_UTC},
                  bool_or(source LIKE 'sample%') FILTER (WHERE session_date = (SELECT max(session_date) FROM raw.bars_daily))
           FROM raw.bars_daily""",
    )
    newest, ingested_at, is_sample = row if row else (None, None, None)
    md: dict = {"last_completed_session": dg.MetadataValue.text(expected.isoformat()),
                "calendar": dg.MetadataValue.text(calendar)}
    if newest is None:
        return False, "raw.bars_daily is empty: no daily bars loaded yet (trading ingest PATH, or a scan)", md
    behind = sessions_between(newest, expected, calendar)
    days = (expected - newest).days
    md.update(newest_session=dg.MetadataValue.text(newest.isoformat()),
              sessions_behind=dg.MetadataValue.int(behind), days_behind=dg.MetadataValue.int(max(days, 0)))
    if ingested_at is not None:
        md["newest_ingested_at"] = dg.MetadataValue.text(f"{ingested_at.isoformat()} UTC")
    if behind == 0:
        return True, f"newest daily bar {newest} is current (last completed {calendar} session {expected})", md
    msg = (f"stale: newest daily bar is {newest}, {behind} {calendar} sessions ({days} days) behind the "
           f"last completed session {expected}")
    if is_sample:
        msg += ("; these are the bundled sample bars, which are historical (they end in 2013), so this "
                "check fails on them by design. Load current bars (TRADING_DATA_SOURCE=alpaca|ib, "
                "or trading ingest PATH) to make it pass")
    else:
        msg += "; the end-of-day scan (eod_scan schedule) or the data source is behind"
    return False, msg, md


def signals_freshness(con, signals_built_at: datetime | None) -> tuple[bool, str, dict]:
    """(passed, message, metadata): were the signals built after the newest bar was ingested?

    ``signals_built_at`` is the latest materialization of ``marts/signals`` (naive UTC).
    """
    row = warehouse.fetch_one(con, f"SELECT {INGESTED_AT_UTC}, max(ts) FROM raw.bars_daily")
    ingested_at, newest_bar = row if row else (None, None)
    md: dict = {}
    if newest_bar is not None:
        md["newest_bar"] = dg.MetadataValue.text(str(newest_bar))
        md["newest_bar_ingested_at"] = dg.MetadataValue.text(f"{ingested_at.isoformat()} UTC")
    if signals_built_at is not None:
        md["signals_built_at"] = dg.MetadataValue.text(f"{signals_built_at.isoformat()} UTC")
    if newest_bar is None:
        return False, "raw.bars_daily is empty: no bars to build signals from", md
    if signals_built_at is None:
        return False, f"marts/signals was never materialized; the newest bar ({newest_bar}) has no signals", md
    lag = (ingested_at - signals_built_at).total_seconds()
    md["lag_seconds"] = dg.MetadataValue.float(max(lag, 0.0))
    if lag <= 0:
        return True, f"marts/signals built {signals_built_at:%Y-%m-%d %H:%M:%S} UTC, after the newest bar ({newest_bar}) landed", md
    return False, (f"stale: marts/signals was built {signals_built_at:%Y-%m-%d %H:%M:%S} UTC, {_human(lag)} "
                   f"before the newest daily bar ({newest_bar}) was ingested at {ingested_at:%Y-%m-%d %H:%M:%S} UTC; "
                   "run the scan (scan_daily) to rebuild it"), md


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _riding_along(context: dg.AssetCheckExecutionContext) -> bool:
    """True when this check was pulled into a run that materializes assets (a scan, an ingest)."""
    # a whole-job run records an empty asset_selection; its (subset) job_def knows the assets
    selected = context.run.asset_selection or context.op_execution_context.job_def.asset_layer.selected_asset_keys
    return bool(selected)


def _now() -> datetime:
    return datetime.now(UTC)


def _skip(context: dg.AssetCheckExecutionContext, check: str) -> None:
    logs.run_event(context.log, "freshness_skipped", check=check, run_job=context.run.job_name,
                   reason=f"evaluated only in check-only runs (job {JOB_NAME}), not inside scans")


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(BARS_CHECK, asset=DAILY, blocking=False,
                             description="The newest daily bar is on the last completed XNYS session.")],
    can_subset=True, pool=POOL, name=BARS_CHECK,
)
def bars_daily_fresh(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
    if _riding_along(context):
        _skip(context, BARS_CHECK)
        return
    con = _open(warehouse)
    try:
        passed, message, md = (bars_freshness(con, _now()) if con is not None
                               else (False, "no warehouse yet: nothing loaded", {}))
    finally:
        if con is not None:
            con.close()
    yield dg.AssetCheckResult(asset_key=DAILY, check_name=BARS_CHECK, passed=passed,
                              severity=dg.AssetCheckSeverity.ERROR, description=message,
                              metadata={"message": dg.MetadataValue.text(message), **md})


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(SIGNALS_CHECK, asset=SIGNALS, blocking=False,
                             additional_deps=[DAILY],
                             description="marts/signals was built after the newest daily bar was ingested.")],
    can_subset=True, pool=POOL, name=SIGNALS_CHECK,
)
def signals_fresh(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
    if _riding_along(context):
        _skip(context, SIGNALS_CHECK)
        return
    event = context.instance.get_latest_materialization_event(SIGNALS)
    built = datetime.fromtimestamp(event.timestamp, UTC).replace(tzinfo=None) if event else None
    con = _open(warehouse)
    try:
        passed, message, md = (signals_freshness(con, built) if con is not None
                               else (False, "no warehouse yet: nothing loaded", {}))
    finally:
        if con is not None:
            con.close()
    yield dg.AssetCheckResult(asset_key=SIGNALS, check_name=SIGNALS_CHECK, passed=passed,
                              severity=dg.AssetCheckSeverity.ERROR, description=message,
                              metadata={"message": dg.MetadataValue.text(message), **md})


def _open(wh: WarehouseResource):
    try:
        return warehouse.connect(wh.resolved_path(), read_only=True)
    except FileNotFoundError:
        return None


#: subtract from asset job selections that should not run the freshness checks
FRESHNESS_CHECKS = dg.AssetSelection.checks(bars_daily_fresh, signals_fresh)

freshness_job = dg.define_asset_job(
    JOB_NAME,
    selection=FRESHNESS_CHECKS,
    description="Freshness of the daily bars and the signals (non-blocking checks; fails on the "
    "bundled 2013 sample by design).",
    config=run_logging(),
)


@dg.schedule(
    job=freshness_job,
    cron_schedule="0 18 * * 1-5",
    execution_timezone="America/New_York",
    default_status=(dg.DefaultScheduleStatus.STOPPED if get_settings().data_source == "sample"
                    else dg.DefaultScheduleStatus.RUNNING),
    description="Weekdays 18:00 New York, after the end-of-day scan: are bars and signals current? "
    "Starts stopped with the bundled (historical) sample data.",
)
def freshness_daily(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest(run_key=f"freshness-{context.scheduled_execution_time:%Y-%m-%d}",
                         run_config=with_run_logging())
