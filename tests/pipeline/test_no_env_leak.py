"""A scan run in-process leaves the process environment as it found it."""

from __future__ import annotations

import os
from datetime import date

from trading_pipeline import runs
from trading_pipeline.settings import get_settings


def test_scan_does_not_leak_the_warehouse_path(trading_home):
    assert "TRADING_WAREHOUSE" not in os.environ
    r = runs.run_job("scan_daily", get_settings(),
                     run_config={"ops": {"raw__bars_daily": {"config": {"source": "sample", "synthetic_symbols": 2}}}},
                     start=date(2013, 1, 2), end=date(2013, 3, 1))
    assert r.success, runs.failure_message(r)
    assert "TRADING_WAREHOUSE" not in os.environ
