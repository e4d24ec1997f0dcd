"""The `rebalance` Dagster job run in-process (runs.run_job, as the CLI runs jobs) against a real
TRADING_HOME, and its schedule: off by default, after the XNYS close, skipped without targets."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl
import pytest

from tests.trading.conftest import daily_bars
from trading_pipeline import runs
from trading_pipeline.marketdata.warehouse import upsert_bars, writer
from trading_pipeline.settings import get_settings
from trading_pipeline.trading.store import OpsStore

pytestmark = [pytest.mark.timeout(600)]
NY = ZoneInfo("America/New_York")


@pytest.fixture
def home(trading_home, monkeypatch, tmp_path):
    for var in ("TRADING_OPS_URL", "TRADING_ACCOUNTS_FILE", "TRADING_RISK_FILE", "TRADING_ACCOUNT",
                "TRADING_REBALANCE_TARGETS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRADING_BROKER", "paper")
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_dirs()
    bars = daily_bars("GOOG", [(100, 101, 99, 100)] * 2, start=datetime(2024, 3, 4)).vstack(
        daily_bars("AAPL", [(50, 51, 49, 50)] * 2, start=datetime(2024, 3, 4)))
    with writer(settings.warehouse_path) as con:
        upsert_bars(con, "raw.bars_daily", bars.with_columns(pl.col("ts").dt.date().alias("session_date")), source="test")
    path = tmp_path / "targets.csv"
    path.write_text("symbol,weight\nGOOG,0.1\nAAPL,0.1\n")
    return settings, path


def _config(**kw) -> dict:
    return {"ops": {"rebalance_account": {"config": kw}}}


def _orders(settings) -> list:
    store = OpsStore.from_settings(settings)
    try:
        return store.list_orders()
    finally:
        store.close()


def test_the_job_rebalances_once_and_a_rerun_places_nothing_more(home):
    settings, path = home
    dry = runs.run_job("rebalance", settings, run_config=_config(targets=str(path), dry_run=True))
    assert dry.success
    plan = dry.output_for_node("rebalance_account")
    assert [(o["symbol"], o["side"], str(o["quantity"])) for o in plan["orders"]] == [("AAPL", "buy", "200"), ("GOOG", "buy", "100")]
    assert plan["results"] == [] and _orders(settings) == []
    sent = runs.run_job("rebalance", settings, run_config=_config(targets=str(path)))
    assert sent.success
    assert [r["action"] for r in sent.output_for_node("rebalance_account")["results"]] == ["submitted", "submitted"]
    again = runs.run_job("rebalance", settings, run_config=_config(targets=str(path)))
    assert again.success and again.output_for_node("rebalance_account")["orders"] == []
    assert sorted(o.symbol for o in _orders(settings)) == ["AAPL", "GOOG"]


def test_bad_targets_fail_the_run_with_the_reason(home, tmp_path):
    settings, _path = home
    bad = tmp_path / "bad.csv"
    bad.write_text("GOOG,0.9\nAAPL,0.2\n")
    result = runs.run_job("rebalance", settings, run_config=_config(targets=str(bad)))
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "weights sum to 1.1, above 1" in failure.event_specific_data.error.message


def test_the_schedule_is_off_by_default_and_runs_after_the_close(home, monkeypatch):
    settings, path = home
    from trading_pipeline.definitions import defs

    schedule = defs().get_repository_def().get_schedule_def("rebalance_after_close")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED and schedule.job_name == "rebalance"
    after_close = datetime(2024, 3, 5, 16, 45, tzinfo=NY)
    with dg.build_schedule_context(scheduled_execution_time=after_close) as ctx:
        skip = schedule.evaluate_tick(ctx)
    assert "TRADING_REBALANCE_TARGETS is not set" in skip.skip_message
    monkeypatch.setenv("TRADING_REBALANCE_TARGETS", str(path))
    get_settings.cache_clear()
    with dg.build_schedule_context(scheduled_execution_time=after_close) as ctx:
        tick = schedule.evaluate_tick(ctx)
    assert [r.run_key for r in tick.run_requests] == ["rebalance-2024-03-05"]
    with dg.build_schedule_context(scheduled_execution_time=datetime(2024, 3, 9, 16, 45, tzinfo=NY)) as ctx:
        assert "not an XNYS session" in schedule.evaluate_tick(ctx).skip_message  # a Saturday
