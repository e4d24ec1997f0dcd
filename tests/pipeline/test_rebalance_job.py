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
    assert skip.skip_message == "no targets: set TRADING_REBALANCE_TARGETS or `rebalance:` in the rules file"
    from trading_pipeline.settings import PROJECT_DIR

    rules = path.parent / "rules-rebalance.yaml"  # a rules file's `rebalance:` section is targets too
    rules.write_text((PROJECT_DIR / "rules.yaml").read_text() + "\nrebalance: {from_scan: crp_daily, top: 3}\n")
    monkeypatch.setenv("TRADING_RULES_FILE", str(rules))
    get_settings.cache_clear()
    with dg.build_schedule_context(scheduled_execution_time=after_close) as ctx:
        assert [r.run_key for r in schedule.evaluate_tick(ctx).run_requests] == ["rebalance-2024-03-05"]
    monkeypatch.delenv("TRADING_RULES_FILE")
    monkeypatch.setenv("TRADING_REBALANCE_TARGETS", str(path))
    get_settings.cache_clear()
    with dg.build_schedule_context(scheduled_execution_time=after_close) as ctx:
        tick = schedule.evaluate_tick(ctx)
    assert [r.run_key for r in tick.run_requests] == ["rebalance-2024-03-05"]
    with dg.build_schedule_context(scheduled_execution_time=datetime(2024, 3, 9, 16, 45, tzinfo=NY)) as ctx:
        assert "not an XNYS session" in schedule.evaluate_tick(ctx).skip_message  # a Saturday


def test_the_job_takes_its_targets_from_a_scan(home, monkeypatch):
    """Config from_scan (or the rules file's `rebalance:`): equal weight over the scan's top long
    signals of its latest session in marts.signals."""
    from trading_pipeline.settings import PROJECT_DIR

    settings, _path = home
    with writer(settings.warehouse_path) as con:
        con.execute("""CREATE OR REPLACE TABLE marts.signals AS SELECT * FROM (VALUES
            ('GOOG', '1d', TIMESTAMP '2024-03-05', DATE '2024-03-05', 'crp_long', 'long', 80.0, 'x', 'crp_daily'),
            ('AAPL', '1d', TIMESTAMP '2024-03-05', DATE '2024-03-05', 'crp_long', 'long', 60.0, 'x', 'crp_daily'))
            t(symbol, timeframe, ts, session_date, kind, direction, score, reason, scan)""")
    dry = runs.run_job("rebalance", settings, run_config=_config(from_scan="crp_daily", top=1, dry_run=True))
    assert dry.success, runs.failure_message(dry)
    plan = dry.output_for_node("rebalance_account")
    assert [(o["symbol"], str(o["target_weight"])) for o in plan["orders"]] == [("GOOG", "1")]
    rules = settings.home / "rules.yaml"
    rules.write_text((PROJECT_DIR / "rules.yaml").read_text() + "\nrebalance: {from_scan: crp_daily, top: 2}\n")
    monkeypatch.setenv("TRADING_RULES_FILE", str(rules))
    get_settings.cache_clear()
    by_rules = runs.run_job("rebalance", get_settings(), run_config=_config(dry_run=True))
    assert by_rules.success, runs.failure_message(by_rules)
    assert sorted(o["symbol"] for o in by_rules.output_for_node("rebalance_account")["orders"]) == ["AAPL", "GOOG"]
