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
