"""Scan schedules follow the exchange calendar: holidays skipped, early closes respected."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg

from trading_pipeline.defs.scans import eod_decision, eod_scan, intraday_decision, replay_cutoffs

NY = ZoneInfo("America/New_York")


def test_eod_after_regular_close_and_not_before():
    assert eod_decision(datetime(2026, 11, 24, 16, 15, tzinfo=NY)) == (True, "2026-11-24")
    run, why = eod_decision(datetime(2026, 11, 24, 13, 15, tzinfo=NY))
    assert not run and "closes at 16:00" in why


def test_eod_skips_holiday_and_weekend():
    assert eod_decision(datetime(2026, 11, 26, 16, 15, tzinfo=NY))[0] is False  # Thanksgiving
    assert eod_decision(datetime(2026, 11, 28, 16, 15, tzinfo=NY))[0] is False  # Saturday


def test_eod_runs_at_early_close_once():
    ticks = [datetime(2026, 11, 27, 13, 15, tzinfo=NY), datetime(2026, 11, 27, 16, 15, tzinfo=NY)]
    keys = set()
    for t in ticks:
        with dg.build_schedule_context(scheduled_execution_time=t) as ctx:
            req = eod_scan(ctx)
        assert isinstance(req, dg.RunRequest)
        keys.add(req.run_key)
    assert keys == {"eod-2026-11-27"}  # the 16:15 tick repeats the key: the daemon launches once


def test_intraday_only_while_open():
    assert intraday_decision(datetime(2026, 11, 24, 10, 0, tzinfo=NY)) == (True, "2026-11-24")
    assert intraday_decision(datetime(2026, 11, 24, 16, 5, tzinfo=NY))[0] is False
    assert intraday_decision(datetime(2026, 11, 27, 13, 30, tzinfo=NY))[0] is False  # early close


def test_replay_steps_cover_the_session():
    steps = replay_cutoffs()
    assert steps[0] == datetime(2013, 3, 1, 14, 35) and steps[-1] == datetime(2013, 3, 1, 21, 0)
    assert len(steps) == 78


def _unfinished_intraday_run(inst: dg.DagsterInstance, session: str, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    from trading_pipeline import runs
    from trading_pipeline.defs.scans import session_tags

    job = runs.definitions().resolve_job_def("scan_intraday")
    return inst.create_run_for_job(job_def=job, status=status, tags=session_tags(session))


def test_intraday_ticks_never_queue_behind_an_unfinished_run_of_the_session(trading_home):
    """Issue 13: on a slow machine each 5-minute tick added a run behind the previous one, an
    unbounded queue. A tick for a session whose previous intraday run is still queued or
    running is skipped with the reason; other sessions and finished runs do not hold it."""
    from trading_pipeline import runs
    from trading_pipeline.defs.scans import intraday_scan
    from trading_pipeline.settings import get_settings

    inst = runs.instance(get_settings())
    tick = datetime(2026, 11, 24, 10, 5, tzinfo=NY)

    def evaluate():
        with dg.build_schedule_context(scheduled_execution_time=tick, instance=inst) as ctx:
            return intraday_scan(ctx)

    req = evaluate()
    assert isinstance(req, dg.RunRequest)
    cfg = req.run_config["ops"]["raw__bars_intraday"]["config"]
    assert (cfg["start"], cfg["end"], req.tags["trading/session"]) == ("2026-11-24",) * 3
    _unfinished_intraday_run(inst, "2026-11-23", dg.DagsterRunStatus.STARTED)  # another session
    assert isinstance(evaluate(), dg.RunRequest)
    run = _unfinished_intraday_run(inst, "2026-11-24", dg.DagsterRunStatus.STARTING)
    skip = evaluate()
    assert isinstance(skip, dg.SkipReason) and run.run_id[:8] in skip.skip_message and "starting" in skip.skip_message
    inst.report_run_failed(run)
    assert isinstance(evaluate(), dg.RunRequest)


def test_replay_waits_for_its_previous_step_and_keeps_its_place(trading_home):
    from trading_pipeline import runs
    from trading_pipeline.defs.scans import REPLAY_SESSION, sample_replay
    from trading_pipeline.settings import get_settings

    inst = runs.instance(get_settings())
    run = _unfinished_intraday_run(inst, REPLAY_SESSION, dg.DagsterRunStatus.STARTED)
    with dg.build_sensor_context(instance=inst, cursor="3") as ctx:
        out = sample_replay(ctx)
        assert isinstance(out, dg.SkipReason) and "still started" in out.skip_message
        assert ctx.cursor == "3"  # the step is taken once that run ends
    inst.report_run_failed(run)
    with dg.build_sensor_context(instance=inst, cursor="3") as ctx:
        req = sample_replay(ctx)
        assert isinstance(req, dg.RunRequest) and ctx.cursor == "4"
    assert req.run_key == f"replay-{replay_cutoffs()[3]:%Y%m%dT%H%M}"
