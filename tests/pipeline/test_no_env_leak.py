"""Runs leave the process environment as they found it: nothing writes ``os.environ`` at run
time; a child process (dbt) gets what it needs in its own environment or on its command line."""

from __future__ import annotations

import os
from datetime import date

from tests.scans.runs import scan_daily
from trading_pipeline import runs
from trading_pipeline.settings import get_settings

OURS = ("TRADING_", "DAGSTER_", "DBT_", "GX_", "PATH")  # (libraries may set their own, e.g. polars' allocator)


def _ours() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(OURS)}


def test_a_scan_and_an_orders_run_change_nothing_in_the_environment(trading_home):
    before = _ours()
    assert "TRADING_WAREHOUSE" not in before and "DAGSTER_HOME" not in before
    scan_daily({"source": "sample", "synthetic_symbols": 2}, date(2013, 1, 2), date(2013, 3, 1))
    assert runs.run_job("trade_signals", get_settings()).success
    assert _ours() == before
