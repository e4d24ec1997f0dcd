"""Freshness checks: fresh data passes, stale data fails with how old it is; real Dagster runs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl
import pytest

from trading_pipeline.defs import freshness
from trading_pipeline.defs.resources import WarehouseResource
from trading_pipeline.marketdata.warehouse import upsert_bars, writer


def _bars(sessions: list[date], symbol: str = "GOOG") -> pl.DataFrame:
    rows = [{"symbol": symbol, "timeframe": "1d", "ts": datetime(d.year, d.month, d.day, 14, 30),
             "session_date": d, "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 1e5}
            for d in sessions]
    return pl.DataFrame(rows, schema_overrides={"ts": pl.Datetime("us")})


def _load(path, sessions: list[date], source: str) -> None:
    with writer(path) as con:
        upsert_bars(con, "raw.bars_daily", _bars(sessions), source=source)


@pytest.fixture(scope="module")
def real_defs():
    from trading_pipeline.definitions import defs

    return defs()


def _run(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, dg.AssetCheckEvaluation]:
    result = defs.resolve_job_def(freshness.JOB_NAME).execute_in_process(instance=instance, raise_on_error=False)
    assert result.success, "a failed freshness check must not fail the run (non-blocking)"
    return {ev.check_name: ev for ev in result.get_asset_check_evaluations()}


def _message(ev: dg.AssetCheckEvaluation) -> str:
    return ev.metadata["message"].value


def test_definitions_load_with_a_check_only_job_and_a_schedule(real_defs):
    job = real_defs.resolve_job_def(freshness.JOB_NAME)
    assert set(job.asset_layer.selected_asset_keys) == set()  # checks only, no materializations
    keys = {(k.asset_key, k.name) for k in job.asset_layer.asset_graph.asset_check_keys
            if k.name in (freshness.BARS_CHECK, freshness.SIGNALS_CHECK)}
    assert keys == {(freshness.DAILY, freshness.BARS_CHECK), (freshness.SIGNALS, freshness.SIGNALS_CHECK)}
    sched = real_defs.resolve_schedule_def("freshness_daily")
    assert sched.job_name == freshness.JOB_NAME
    for checks_def in (freshness.bars_daily_fresh, freshness.signals_fresh):
        assert not any(spec.blocking for spec in checks_def.check_specs)


def test_last_completed_session_follows_the_xnys_calendar():
    # Friday 2024-07-05 after the close: that Friday; before the open on Monday: still Friday
    assert freshness.last_completed_session(datetime(2024, 7, 5, 21, 0, tzinfo=UTC)) == date(2024, 7, 5)
    assert freshness.last_completed_session(datetime(2024, 7, 8, 12, 0, tzinfo=UTC)) == date(2024, 7, 5)
    # 2024-07-04 is a holiday: on the evening of the 4th the last session is the 3rd (early close)
    assert freshness.last_completed_session(datetime(2024, 7, 4, 23, 0, tzinfo=UTC)) == date(2024, 7, 3)


def test_fresh_bars_and_signals_pass(trading_home, real_defs):
    from trading_pipeline.settings import get_settings

    last = freshness.last_completed_session(datetime.now(UTC))
    _load(get_settings().warehouse_path, [last - timedelta(days=7), last], source="alpaca:1d")
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(dg.AssetMaterialization(freshness.SIGNALS))  # signals built after the bars
    evals = _run(real_defs, instance)
    assert evals[freshness.BARS_CHECK].passed, _message(evals[freshness.BARS_CHECK])
    assert "is current" in _message(evals[freshness.BARS_CHECK])
    assert evals[freshness.BARS_CHECK].metadata["sessions_behind"].value == 0
    assert evals[freshness.SIGNALS_CHECK].passed, _message(evals[freshness.SIGNALS_CHECK])


def test_stale_sample_bars_fail_saying_how_old_and_that_the_sample_is_historical(trading_home, real_defs):
    from trading_pipeline.settings import get_settings

    _load(get_settings().warehouse_path, [date(2013, 2, 28), date(2013, 3, 1)], source="sample")
    instance = dg.DagsterInstance.ephemeral()
    evals = _run(real_defs, instance)
    bars = evals[freshness.BARS_CHECK]
    assert not bars.passed and bars.severity == dg.AssetCheckSeverity.ERROR
    msg = _message(bars)
    assert msg.startswith("stale: newest daily bar is 2013-03-01, ")
    assert "XNYS sessions" in msg and "days) behind" in msg and "historical" in msg
    assert bars.metadata["sessions_behind"].value > 3000
    sig = evals[freshness.SIGNALS_CHECK]
    assert not sig.passed and "never materialized" in _message(sig)
    # visible to the instance (what the UI and `trading status` read)
    hist = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(freshness.DAILY, freshness.BARS_CHECK), limit=1)
    assert hist and not hist[0].event.asset_check_evaluation.passed


def test_signals_built_before_the_newest_bar_fail(trading_home, real_defs):
    from trading_pipeline.settings import get_settings

    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(dg.AssetMaterialization(freshness.SIGNALS))
    last = freshness.last_completed_session(datetime.now(UTC))
    _load(get_settings().warehouse_path, [last], source="files")  # bars land after the signals were built
    evals = _run(real_defs, instance)
    assert evals[freshness.BARS_CHECK].passed
    sig = evals[freshness.SIGNALS_CHECK]
    assert not sig.passed
    assert _message(sig).startswith("stale: marts/signals was built ") and "run the scan" in _message(sig)


def test_empty_warehouse_fails_clearly(trading_home, real_defs):
    evals = _run(real_defs, dg.DagsterInstance.ephemeral())
    assert not evals[freshness.BARS_CHECK].passed
    assert "nothing loaded" in _message(evals[freshness.BARS_CHECK])


def test_a_check_pulled_into_an_asset_run_does_not_evaluate(tmp_path):
    """Scan/ingest jobs select raw/bars_daily, which drags its checks along: they must not fail the scan."""
    path = tmp_path / "wh.duckdb"
    _load(path, [date(2013, 3, 1)], source="sample")

    @dg.asset(key=freshness.DAILY)
    def bars_daily():
        return None

    defs = dg.Definitions(
        assets=[bars_daily], asset_checks=[freshness.bars_daily_fresh],
        jobs=[dg.define_asset_job("like_scan", selection=dg.AssetSelection.assets(freshness.DAILY))],
        resources={"warehouse": WarehouseResource(path=str(path))},
    )
    job = defs.resolve_job_def("like_scan")
    assert any(k.name == freshness.BARS_CHECK for k in job.asset_layer.asset_graph.asset_check_keys)
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success
    assert result.get_asset_check_evaluations() == []


def test_subtracting_freshness_checks_keeps_the_quality_checks(real_defs):
    """The wiring recommended for the scan/ingest jobs: ``selection - FRESHNESS_CHECKS``."""
    graph = real_defs.resolve_asset_graph()
    before = dg.AssetSelection.assets(freshness.DAILY).resolve_checks(graph)
    after = (dg.AssetSelection.assets(freshness.DAILY) - freshness.FRESHNESS_CHECKS).resolve_checks(graph)
    assert dg.AssetCheckKey(freshness.DAILY, freshness.BARS_CHECK) in before
    assert before - after == {dg.AssetCheckKey(freshness.DAILY, freshness.BARS_CHECK)}
    assert any(k.name == "unique_keys" for k in after)  # blocking quality checks still run


def test_ingestion_time_in_a_local_time_zone_is_compared_in_utc(tmp_path):
    """upsert_bars stamps ingested_at in the session's local zone; the check converts it."""
    import duckdb

    path = tmp_path / "wh.duckdb"
    with writer(path) as con:
        con.execute("SET TimeZone = 'America/New_York'")  # a warehouse written on a New York laptop
        upsert_bars(con, "raw.bars_daily", _bars([date(2024, 7, 5)]), source="files")
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET TimeZone = 'America/New_York'")
        built_before = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
        passed, msg, _md = freshness.signals_freshness(con, built_before)
        assert not passed and "before the newest daily bar" in msg  # naive local time would say "after"
        passed, _msg, _md = freshness.signals_freshness(con, datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=1))
        assert passed
    finally:
        con.close()
