"""The whole path in real in-process Dagster runs: bars → dbt scan → serving → orders → fills."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest

from tests.scans.runs import scan_daily
from trading_pipeline import runs
from trading_pipeline.defs.bars import CHECK_GROUPS
from trading_pipeline.marketdata import warehouse
from trading_pipeline.settings import get_settings

SRC = {"source": "sample", "synthetic_symbols": 20}  # as the demo: CRP (min_score 60) signals on TRADE_DAY
TRADE_DAY = date(2013, 2, 22)


def q(sql, params=None):
    con = warehouse.connect(get_settings().warehouse_path, read_only=True)
    try:
        return warehouse.fetch_frame(con, sql, params)
    finally:
        con.close()


def trade():
    r = runs.run_job("trade_signals", get_settings())
    assert r.success, runs.failure_message(r)
    return r


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    """History to TRADE_DAY, scan, trade; then the next week, scan, trade again."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("story") / "trading"
    mp.setenv("TRADING_HOME", str(home))
    get_settings.cache_clear()
    first = scan_daily(SRC, date(2012, 3, 1), TRADE_DAY)
    trade1 = trade()
    orders_after_first = q("SELECT * FROM ops.orders")
    second = scan_daily(SRC, date(2013, 2, 25), date(2013, 3, 1))
    trade2 = trade()
    yield {"first": first, "second": second, "trade1": trade1, "trade2": trade2,
           "orders_after_first": orders_after_first}
    mp.undo()
    get_settings.cache_clear()


def test_scan_builds_marts_and_checks_pass(story):
    keys = {e.asset_key.to_user_string() for e in story["first"].get_asset_materialization_events()}
    assert {"raw/bars_daily", "marts/signals", "marts/indicators_daily", "serving/snapshot"} <= keys
    failed = [e for e in story["first"].get_asset_check_evaluations() if not e.passed]
    assert failed == []
    sig = q("SELECT count(*) AS n, count(DISTINCT session_date) AS d FROM marts.signals WHERE timeframe = '1d'").row(0)
    assert sig[0] > 0 and sig[1] > 10
    # the run published a lake snapshot: the pointer the API reads names the snapshot the run's
    # serving/snapshot materialization recorded (what `trading sql --as-of <run id>` reads)
    from trading_pipeline.serving.snapshot import read_pointer

    pointer = read_pointer(get_settings().serving_dir)
    recorded = [e.materialization.metadata["lake_snapshot_id"].value
                for e in story["first"].get_asset_materialization_events()
                if e.asset_key.to_user_string() == "serving/snapshot"]
    assert pointer is not None and recorded and pointer["snapshot_id"] >= recorded[-1] > 0


def test_orders_come_from_the_trade_day_and_fill_at_next_open(story):
    first = story["orders_after_first"]
    assert first.height > 0
    # orders from the first run come from TRADE_DAY's signals only, none filled yet: no later bar existed
    assert set(first["status"].to_list()) <= {"accepted", "rejected"}
    assert {str(d)[:10] for d in first["signal_ts"].to_list()} == {TRADE_DAY.isoformat()}
    fills = q("""SELECT f.*, o.symbol AS osym FROM ops.fills f JOIN ops.orders o USING (client_order_id)""")
    assert fills.height > 0
    # each fill is at the open of the session after the signal (2013-02-25), plus slippage
    for row in fills.iter_rows(named=True):
        open_ = q("SELECT open FROM raw.bars_daily WHERE symbol = ? AND ts = '2013-02-25'", [row["osym"]])["open"][0]
        assert abs(float(row["price"]) - open_) / open_ < 0.01


def test_reconciliation_check_passes(story):
    evals = story["trade2"].get_asset_check_evaluations()
    assert [(e.check_name, e.passed) for e in evals] == [("reconciliation", True)]


def test_retried_order_job_submits_nothing_twice(story):
    before = q("SELECT client_order_id, status FROM ops.orders ORDER BY 1")
    trade()
    after = q("SELECT client_order_id, status FROM ops.orders ORDER BY 1")
    assert before["client_order_id"].to_list() == after["client_order_id"].to_list()


def test_sensor_keys_one_run_per_signals_materialization(story):
    from trading_pipeline.defs.orders import signals_to_orders

    inst = runs.instance(get_settings())
    with dg.build_sensor_context(instance=inst) as ctx:
        first = list(signals_to_orders(ctx) or [])
    with dg.build_sensor_context(instance=inst) as ctx:
        again = list(signals_to_orders(ctx) or [])
    keys = [r.run_key for r in first if isinstance(r, dg.RunRequest)]
    assert keys and keys == [r.run_key for r in again if isinstance(r, dg.RunRequest)]
    assert keys[0] == f"signals-{story['second'].run_id}"


def check_executions(run_id: str) -> dict[tuple[str, str, str | None], str]:
    """Dagster's asset_check_executions rows of a run: (asset, check, partition) -> status."""
    inst = runs.instance(get_settings())
    out = {}
    for key in runs.definitions().resolve_asset_graph().asset_check_keys:
        for rec in inst.event_log_storage.get_asset_check_execution_history(key, limit=100_000):
            if rec.run_id == run_id:
                out[(key.asset_key.to_user_string(), key.name, rec.partition)] = rec.status.value
    return out


def test_range_scan_resolves_every_check_execution(story):
    """A scan over many sessions: no check execution is left PLANNED; the bar checks passed
    once each over the whole range, dbt's tests once each."""
    rows = check_executions(story["first"].run_id)
    assert "PLANNED" not in rows.values()
    bars = {(c, p): st for (a, c, p), st in rows.items() if a == "raw/bars_daily"}
    assert bars == {(c, None): "SUCCEEDED" for c in CHECK_GROUPS}
    dbt = {(a, c): p for (a, c, p) in rows if a != "raw/bars_daily"}
    assert dbt and set(dbt.values()) == {None}


def test_failed_bar_check_blocks_the_scan_downstream(story):
    con = warehouse.connect(get_settings().warehouse_path)
    # bars that bypassed ingest (a manual INSERT, twice): high below low, duplicated key.
    # A symbol the source does not deliver, so re-loading the session does not replace them.
    for _ in range(2):
        con.execute("""INSERT INTO raw.bars_daily VALUES ('ZZZZ','1d','2013-03-01','2013-03-01',1,0.5,2,1,1,'manual',now())""")
    con.close()
    signals_before = q("SELECT count(*) AS n FROM marts.signals")["n"][0]
    bad = {"raw/bars_daily:unique_keys", "raw/bars_daily:high_low_consistent"}
    # one session, then a range of sessions in one run: both blocked
    for kw in ({"start": date(2013, 3, 1)}, {"start": date(2013, 2, 25), "end": date(2013, 3, 1)}):
        r = scan_daily(SRC, check=False, **kw)
        assert bad <= set(runs.failed_checks(r))
        assert not r.success
        materialized = {e.asset_key.to_user_string() for e in r.get_asset_materialization_events()}
        assert "marts/signals" not in materialized and "serving/snapshot" not in materialized
        assert q("SELECT count(*) AS n FROM marts.signals")["n"][0] == signals_before
        # the bar checks' executions, once each: FAILED for the rules the bad bars break, each
        # failure naming the session they are in
        rows = {c: st for (a, c, p), st in check_executions(r.run_id).items() if a == "raw/bars_daily"}
        assert set(rows) == set(CHECK_GROUPS)
        assert {c for c, st in rows.items() if st == "FAILED"} == {"unique_keys", "high_low_consistent"}
        for ev in r.get_asset_check_evaluations():
            if ev.asset_key.to_user_string() == "raw/bars_daily" and not ev.passed:
                assert {s for f in ev.metadata["failures"].value for s in f["sessions"]} == {"2013-03-01"}


def test_portfolio_daily_in_the_warehouse(story):
    pd_ = q("SELECT * FROM ops.portfolio_daily ORDER BY session_date")
    assert pd_["session_date"].cast(str).to_list() == ["2013-02-22", "2013-03-01"]
    last = pd_.row(-1, named=True)
    assert abs(last["cash"] + last["market_value"] - last["equity"]) < 1e-6
    assert last["positions"] == q("SELECT count(*) AS n FROM ops.positions WHERE quantity <> 0")["n"][0]


def test_equity_marked_at_each_session_close(story):
    """The orders asset marks every account's equity at the session's close in the ops store
    (mirrored to ops.equity_marks): the next session's daily loss limit measures from it."""
    marks = q("SELECT * FROM ops.equity_marks ORDER BY session_date")
    assert marks["session_date"].cast(str).to_list() == ["2013-02-22", "2013-03-01"]
    daily = q("SELECT session_date, equity FROM ops.portfolio_daily ORDER BY session_date")
    assert marks["last_equity"].to_list() == pytest.approx(daily["equity"].to_list())


def test_the_order_job_records_risk_alerts_once_per_session(story, tmp_path, monkeypatch):
    """After the session's close the order job compares each account with risk.yaml's limits:
    a limit reached is a `breach`, one past warn_at_pct a `warning`; each once per session, so
    a re-run of the job records nothing new."""
    import yaml

    from trading_pipeline.settings import PROJECT_DIR
    from trading_pipeline.trading.store import OpsStore

    limits = yaml.safe_load((PROJECT_DIR / "risk.yaml").read_text())
    limits.update(max_total_exposure=100, warn_at_pct=50)  # the story's book holds far more than 100
    risk_file = tmp_path / "risk.yaml"
    risk_file.write_text(yaml.safe_dump(limits))
    monkeypatch.setenv("TRADING_RISK_FILE", str(risk_file))
    get_settings.cache_clear()
    store = OpsStore.from_settings(get_settings())
    before = store.last_risk_alert_id()
    trade()
    new = store.list_risk_alerts(since_id=before)
    gross = [a for a in new if a.kind == "limit_usage:max_total_exposure"]
    assert [(a.account, a.level, str(a.session_date)) for a in gross] == [("paper", "breach", "2013-03-01")]
    assert gross[0].value > gross[0].limit_value == 100 and "max_total_exposure" in gross[0].message
    trade()  # the same session again: nothing new
    assert store.last_risk_alert_id() == max(a.id for a in new)
    get_settings.cache_clear()
