"""A scan run in-process leaves the process environment as it found it."""

from __future__ import annotations

import os
from datetime import date

from tests.scans.runs import scan_daily


def test_scan_does_not_leak_the_warehouse_path(trading_home):
    assert "TRADING_WAREHOUSE" not in os.environ
    scan_daily({"source": "sample", "synthetic_symbols": 2}, date(2013, 1, 2), date(2013, 3, 1))
    assert "TRADING_WAREHOUSE" not in os.environ
