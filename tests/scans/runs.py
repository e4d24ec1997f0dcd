"""Run the daily scan job (bars → dbt → serving snapshot) as the CLI does, for the tests.

``scan_daily`` runs it in this process through ``runs.run_job`` (a real Dagster run under
TRADING_HOME); ``scan_daily_script`` is the same run as a ``python -c`` script, for tests that
need it in a process of its own (to kill it, or to keep it off the test's GIL).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from trading_pipeline import runs
from trading_pipeline.settings import get_settings

JOB = "scan_daily"


def scan_config(src: dict[str, Any]) -> dict[str, Any]:
    """Run config taking the daily bars from ``src`` (``BarsConfig`` fields: source, symbols...)."""
    return {"ops": {"raw__bars_daily": {"config": dict(src)}}}


def scan_daily(src: dict[str, Any], start: date | None = None, end: date | None = None, *, check: bool = True):
    """Scan the sessions ``start``..``end`` (one run, one load); with ``check``, assert that
    the run succeeded (showing the step's error if not). Returns the run's result."""
    r = runs.run_job(JOB, get_settings(), run_config=scan_config(src), start=start, end=end)
    if check:
        assert r.success, runs.failure_message(r)
    return r


def scan_daily_script(src: dict[str, Any], start: date, end: date) -> str:
    """``python -c`` source for the same scan (exits non-zero with the error if it fails).

    It imports only ``trading_pipeline``, so it runs from any working directory.
    """
    return (
        "from datetime import date\n"
        "from trading_pipeline import runs\n"
        "from trading_pipeline.settings import get_settings\n"
        f"r = runs.run_job({JOB!r}, get_settings(), run_config={scan_config(src)!r}, "
        f"start=date({start.year}, {start.month}, {start.day}), end=date({end.year}, {end.month}, {end.day}))\n"
        "assert r.success, runs.failure_message(r)\n"
    )
