"""Scan jobs and their schedules on the exchange calendar, plus a replay of the sample.

* ``scan_daily``: one session's daily bars → dbt (indicators, signals, scans, alerts).
* ``scan_intraday``: one session's intraday bars (up to a cut-off) → dbt.
* ``eod_scan`` schedule: after each XNYS session closes, holidays skipped and early closes
  (13:00) respected, one run per session (run key).
* ``intraday_scan`` schedule: every 5 minutes while XNYS is open.
* ``sample_replay`` sensor: with the bundled sample, walks the last sample session five
  minutes at a time so the intraday scan has new bars to process under ``make up``.

With a source that cannot list "all symbols" (alpaca, ib) both schedules fetch the universe
named by ``TRADING_UNIVERSE`` (marketdata/universes.py), resolved for the session; unset or
empty, the tick skips with the fix as its reason.

A one-session run is tagged ``trading/session``; the intraday schedule and the replay skip
a tick (with the reason in the UI) while the previous run for that session is queued or
running, so a slow machine never builds an unbounded queue.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from trading_pipeline.defs.bars import DAILY, END_TAG, FRESHNESS, INTRADAY, SESSION_TAG, START_TAG
from trading_pipeline.defs.run_logs import run_logging, with_run_logging
from trading_pipeline.marketdata import calendars
from trading_pipeline.marketdata.bars import naive_utc
from trading_pipeline.marketdata.universes import scheduled_symbols
from trading_pipeline.settings import get_settings

ORDERS = dg.AssetKey(["ops", "orders"])
INTRADAY_ONLY = dg.AssetKey(["marts", "indicators_intraday"])
DAILY_ONLY = dg.AssetKey(["marts", "indicators_daily"])
EXCHANGE_CALENDAR = calendars.DEFAULT_CALENDAR
REPLAY_SESSION = "2013-03-01"
REPLAY_STEP = timedelta(minutes=5)
# every dbt model (staging, indicators, signals, scans, alerts) and the serving snapshot
DBT_AND_SERVING = dg.AssetSelection.groups("scans", "serving")

scan_daily_job = dg.define_asset_job(
    "scan_daily",
    selection=(dg.AssetSelection.assets(DAILY) | DBT_AND_SERVING) - dg.AssetSelection.assets(INTRADAY_ONLY) - FRESHNESS,
    description="End-of-day scan: one session's daily bars, then dbt indicators and signals.",
    config=run_logging(),
)
scan_intraday_job = dg.define_asset_job(
    "scan_intraday",
    selection=(dg.AssetSelection.assets(INTRADAY) | DBT_AND_SERVING) - dg.AssetSelection.assets(DAILY_ONLY) - FRESHNESS,
    description="Intraday scan: one session's intraday bars up to now, then dbt.",
    config=run_logging(),
)

# A home whose bars come from files (`trading ingest`) has no source to fetch from: its scan
# rebuilds the marts from the stored bars and publishes (sources/registry.py home_source).
scan_daily_stored_job = dg.define_asset_job(
    "scan_daily_stored",
    selection=DBT_AND_SERVING - dg.AssetSelection.assets(INTRADAY_ONLY) - FRESHNESS,
    description="Scan of the stored bars (a file-loaded home): dbt indicators and signals, then publish.",
    config=run_logging(),
)
scan_intraday_stored_job = dg.define_asset_job(
    "scan_intraday_stored",
    selection=DBT_AND_SERVING - dg.AssetSelection.assets(DAILY_ONLY) - FRESHNESS,
    description="Intraday scan of the stored bars (a file-loaded home): dbt, then publish.",
    config=run_logging(),
)


def session_tags(session: str) -> dict[str, str]:
    """A one-session run's tags (as runs.run_job tags the CLI's runs)."""
    return {START_TAG: session, END_TAG: session, SESSION_TAG: session}


UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]


def unfinished_scan(instance: dg.DagsterInstance, job: str, session: str) -> str | None:
    """Why a new run of ``job`` for ``session`` should wait: the previous one is still queued
    or running (each run loads the session up to its own cut-off, so a later run does all the
    earlier one would; never queue a second behind it). None when there is none."""
    runs = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job, statuses=UNFINISHED, tags={SESSION_TAG: session}), limit=1)
    if not runs:
        return None
    run = runs[0].dagster_run
    return (f"the previous {job} run for {session} ({run.run_id[:8]}) is still {run.status.value.lower()}; "
            "skipped so runs never queue up behind it (the next tick loads everything up to its own time)")


def _scheduled_source() -> tuple[str | None, str]:
    from trading_pipeline.marketdata.sources.registry import home_source
    from trading_pipeline.serving.snapshot import stored_labels

    settings = get_settings()
    return home_source(settings, stored_labels(settings.serving_dir))


def eod_decision(now: datetime, calendar: str = EXCHANGE_CALENDAR) -> tuple[bool, str]:
    """Should the end-of-day scan run at ``now`` (tz-aware)? Returns (run, session or reason)."""
    cal = calendars.get_calendar(calendar)
    day = now.astimezone(cal.tz).date()
    if not cal.is_session(day):
        return False, f"{day} is not an {calendar} session (weekend or holiday)"
    close = cal.session_close(day).to_pydatetime()
    if now < close:
        return False, f"{calendar} closes at {close.astimezone(cal.tz):%H:%M} on {day}"
    return True, day.isoformat()


@dg.schedule(
    job=scan_daily_job,
    cron_schedule=["15 13 * * 1-5", "15 16 * * 1-5"],
    execution_timezone="America/New_York",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="15 minutes after each XNYS close (13:15 on early-close days, else 16:15).",
)
def eod_scan(context: dg.ScheduleEvaluationContext):
    run, what = eod_decision(context.scheduled_execution_time)
    if not run:
        return dg.SkipReason(what)
    source, why = _scheduled_source()
    if source is None:  # nothing to fetch: the home's bars come from files
        return dg.SkipReason(f"{why}: no source to fetch {what} from; load it with `trading ingest`, "
                             "then `trading scan`")
    symbols, skip = scheduled_symbols(get_settings(), source, what)  # alpaca / ib: TRADING_UNIVERSE
    if skip:
        return dg.SkipReason(skip)
    # the 16:15 tick on an early-close day finds the 13:15 run's key and launches nothing
    return dg.RunRequest(run_key=f"eod-{what}", tags=session_tags(what), run_config=with_run_logging(
        {"ops": {"raw__bars_daily": {"config": {"source": source, "start": what, "end": what,
                                                **({"symbols": symbols} if symbols else {})}}}}))


def intraday_decision(now: datetime, calendar: str = EXCHANGE_CALENDAR) -> tuple[bool, str]:
    cal = calendars.get_calendar(calendar)
    minute = now.astimezone(UTC).replace(second=0, microsecond=0, tzinfo=None)
    if not cal.is_open_on_minute(minute, ignore_breaks=True):
        return False, f"{calendar} is closed at {now:%Y-%m-%d %H:%M %Z}"
    return True, cal.minute_to_session(minute).date().isoformat()


@dg.schedule(
    job=scan_intraday_job,
    cron_schedule="*/5 9-16 * * 1-5",
    execution_timezone="America/New_York",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 5 minutes while XNYS is open.",
)
def intraday_scan(context: dg.ScheduleEvaluationContext):
    now = context.scheduled_execution_time
    run, what = intraday_decision(now)
    if not run:
        return dg.SkipReason(what)
    busy = unfinished_scan(context.instance, scan_intraday_job.name, what)
    if busy:
        return dg.SkipReason(busy)
    symbols, skip = scheduled_symbols(get_settings(), get_settings().data_source, what)
    if skip:
        return dg.SkipReason(skip)
    cutoff = naive_utc(now).isoformat()
    return dg.RunRequest(
        run_key=f"intraday-{now:%Y%m%dT%H%M}", tags=session_tags(what),
        run_config=with_run_logging({"ops": {"raw__bars_intraday": {"config": {
            "until": cutoff, "start": what, "end": what, **({"symbols": symbols} if symbols else {})}}}}),
    )


def replay_cutoffs(session: str = REPLAY_SESSION, step: timedelta = REPLAY_STEP) -> list[datetime]:
    row = calendars.sessions(EXCHANGE_CALENDAR, datetime.fromisoformat(session).date(),
                             datetime.fromisoformat(session).date()).row(0, named=True)
    out, t = [], row["open_utc"] + step
    while t <= row["close_utc"]:
        out.append(t)
        t += step
    return out


@dg.sensor(
    job=scan_intraday_job,
    minimum_interval_seconds=30,
    default_status=(dg.DefaultSensorStatus.RUNNING if get_settings().data_source == "sample"
                    else dg.DefaultSensorStatus.STOPPED),
    description="Sample replay: every 30 s, load the next 5 minutes of the last sample session's "
    "1-minute bars and run the intraday scan on them.",
)
def sample_replay(context: dg.SensorEvaluationContext):
    done = int(context.cursor or 0)
    cutoffs = replay_cutoffs()
    if done >= len(cutoffs):
        return dg.SkipReason(f"replay of {REPLAY_SESSION} finished ({len(cutoffs)} steps)")
    busy = unfinished_scan(context.instance, scan_intraday_job.name, REPLAY_SESSION)
    if busy:  # the cursor stays: this step is taken at the next tick after that run ends
        return dg.SkipReason(busy)
    cutoff = cutoffs[done]
    context.update_cursor(str(done + 1))
    return dg.RunRequest(
        run_key=f"replay-{cutoff:%Y%m%dT%H%M}", tags=session_tags(REPLAY_SESSION),
        run_config=with_run_logging({"ops": {"raw__bars_intraday": {"config": {
            "source": "sample", "until": cutoff.isoformat(), "start": REPLAY_SESSION, "end": REPLAY_SESSION}}}}),
    )
