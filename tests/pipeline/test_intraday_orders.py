"""Intraday signals become orders (issue 19): real in-process Dagster runs on the bundled
sample's minute bars: intraday scan → ``trade_signals`` with ``timeframe: 1m`` → paper fills.

The story: the sample's 1m bars for five synthetic symbols (2013-02-19..2013-03-01) load up to
15:00 UTC on 2013-03-01 and are scanned; the order run for ``1m`` trades nothing while
``breakout_intraday`` says ``trade: false``; with ``trade: true`` it trades that session's
signals up to the newest bar (14:59), not a signal stamped at a later bar; a re-run places
nothing new; then the bars up to 15:30 load and the next run fills the orders at the 15:00
bar's open (the next minute bar after the order, not a daily bar).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import yaml

from trading_pipeline import runs
from trading_pipeline.marketdata import warehouse
from trading_pipeline.settings import PROJECT_DIR, get_settings

SCAN = "breakout_intraday"
SESSION = "2013-03-01"
FIRST_CUTOFF = datetime(2013, 3, 1, 15, 0)  # naive UTC: bars that start before it load
SECOND_CUTOFF = datetime(2013, 3, 1, 15, 30)
NEWEST_BAR = datetime(2013, 3, 1, 14, 59)  # the newest 1m bar after the first load
LATER_BAR = datetime(2013, 3, 1, 15, 10)  # a signal stamped here is from a bar not stored yet


def q(sql, params=None):
    con = warehouse.connect(get_settings().warehouse_path, read_only=True)
    try:
        return warehouse.fetch_frame(con, sql, params)
    finally:
        con.close()


def scan_intraday(start: str, end: str, until: datetime) -> None:
    cfg = {"ops": {"raw__bars_intraday": {"config": {
        "source": "sample", "synthetic_symbols": 5, "start": start, "end": end, "until": until.isoformat()}}}}
    r = runs.run_job("scan_intraday", get_settings(), run_config=cfg)
    assert r.success, runs.failure_message(r)


def trade(timeframe: str = "1m", *, check: bool = True) -> dg.ExecuteInProcessResult:
    cfg = {"ops": {"ops__orders": {"config": {"timeframe": timeframe}}}}
    r = runs.run_job("trade_signals", get_settings(), run_config=cfg)
    if check:
        assert r.success, runs.failure_message(r)
    return r


def orders_meta(r: dg.ExecuteInProcessResult) -> dict:
    [mat] = [e.materialization for e in r.get_asset_materialization_events()
             if e.asset_key.to_user_string() == "ops/orders"]
    return {k: v.value for k, v in mat.metadata.items()}


def rules_with(tmp: Path, **trade: bool) -> Path:
    """rules.yaml with ``trade`` set on the named scans (nothing else changed)."""
    doc = yaml.safe_load((PROJECT_DIR / "rules.yaml").read_text())
    for scan in doc["scans"]:
        if scan["name"] in trade:
            scan["trade"] = trade[scan["name"]]
    path = tmp / f"rules-{'-'.join(f'{k}{int(v)}' for k, v in trade.items())}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def use_rules(mp: pytest.MonkeyPatch, path: Path) -> None:
    mp.setenv("TRADING_RULES_FILE", str(path))
    get_settings.cache_clear()


def ops_orders():
    return q("SELECT * FROM ops.orders ORDER BY client_order_id") if "ops.orders" in tables() else None


def tables() -> set[str]:
    con = warehouse.connect(get_settings().warehouse_path, read_only=True)
    try:
        return {r[0] for r in con.sql(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    from trading_pipeline.defs.orders import intraday_timeframes_to_trade

    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("intraday")
    mp.setenv("TRADING_HOME", str(tmp / "trading"))
    mp.delenv("TRADING_WAREHOUSE", raising=False)
    mp.delenv("DAGSTER_HOME", raising=False)
    # the story trades a whole session's signals at once: no staleness cut-off here (that is
    # tests/pipeline/test_order_timeframes.py's story)
    mp.setenv("TRADING_SIGNAL_MAX_AGE", "100000")
    off, on = rules_with(tmp, **{SCAN: False}), rules_with(tmp, **{SCAN: True})
    use_rules(mp, off)
    out: dict = {"off_rules": off, "on_rules": on}
    scan_intraday("2013-02-19", SESSION, FIRST_CUTOFF)
    out["signals"] = q("SELECT * FROM marts.signals WHERE scan = ? AND timeframe = '1m' AND session_date = ?::DATE",
                       [SCAN, SESSION])
    out["sensor_off"] = intraday_timeframes_to_trade()
    out["off"] = trade()
    out["orders_off"] = ops_orders()
    use_rules(mp, on)
    out["sensor_on"] = intraday_timeframes_to_trade()
    # a signal stamped at a bar after the newest stored one (a scan racing ahead, a clock off):
    # it must not trade
    with warehouse.writer(get_settings().warehouse_path) as con:
        con.execute("""INSERT INTO marts.signals SELECT * REPLACE (?::TIMESTAMP AS ts) FROM marts.signals
                       WHERE scan = ? AND timeframe = '1m' AND session_date = ?::DATE AND kind = 'breakout_up'
                       ORDER BY ts LIMIT 1""", [LATER_BAR, SCAN, SESSION])
    out["later_signals"] = q("SELECT count(*) AS n FROM marts.signals WHERE ts = ?::TIMESTAMP", [LATER_BAR])["n"][0]
    out["first"] = trade()
    out["orders_first"] = ops_orders()
    out["again"] = trade()
    out["orders_again"] = ops_orders()
    with warehouse.writer(get_settings().warehouse_path) as con:
        con.execute("DELETE FROM marts.signals WHERE ts = ?::TIMESTAMP AND scan = ?", [LATER_BAR, SCAN])
    scan_intraday(SESSION, SESSION, SECOND_CUTOFF)
    out["second"] = trade()
    out["orders_second"] = ops_orders()
    out["fills"] = q("SELECT f.*, o.signal_ts FROM ops.fills f JOIN ops.orders o USING (client_order_id)")
    yield out
    mp.undo()
    get_settings.cache_clear()


def test_a_scan_with_trade_false_places_nothing(story):
    assert story["signals"].height > 0  # the scan had signals on the session: trade: false held them back
    assert orders_meta(story["off"])["signals"] == 0
    assert story["orders_off"] is None or story["orders_off"].height == 0
    assert story["sensor_off"] == []  # and the sensor launches no intraday run for it


def test_intraday_signals_become_orders_up_to_the_newest_bar(story):
    orders = story["orders_first"]
    assert orders is not None and orders.height > 0
    assert set(orders["strategy"].to_list()) == {SCAN}
    meta = orders_meta(story["first"])
    assert (meta["session"], meta["timeframe"], meta["market_time"]) == (SESSION, "1m", str(NEWEST_BAR))
    sig = story["signals"]
    at_or_before = {(r["symbol"], r["ts"]) for r in sig.iter_rows(named=True) if r["ts"] <= NEWEST_BAR}
    assert {(r["symbol"], r["signal_ts"]) for r in orders.iter_rows(named=True)} <= at_or_before
    # point in time: nothing from the signal stamped at a later bar, and nothing filled yet
    # (no bar after the order existed)
    assert story["later_signals"] == 1
    assert all(ts <= NEWEST_BAR for ts in orders["signal_ts"].to_list())
    assert meta["signals"] == len([1 for r in sig.iter_rows(named=True) if r["ts"] <= NEWEST_BAR])
    assert set(orders["status"].to_list()) <= {"accepted", "rejected"}


def test_a_rerun_places_nothing_new(story):
    before, after = story["orders_first"], story["orders_again"]
    assert after["client_order_id"].to_list() == before["client_order_id"].to_list()
    assert "submitted" not in orders_meta(story["again"])["actions"]


def test_orders_fill_at_the_next_minute_bars_open(story):
    fills = story["fills"]
    first = story["orders_first"]
    assert fills.height > 0
    assert set(first["client_order_id"].to_list()) <= set(fills["client_order_id"].to_list())
    for row in fills.filter(fills["client_order_id"].is_in(first["client_order_id"].to_list())).iter_rows(named=True):
        bar = q("""SELECT ts, open FROM raw.bars_intraday WHERE symbol = ? AND timeframe = '1m' AND ts > ?
                   ORDER BY ts LIMIT 1""", [row["symbol"], NEWEST_BAR]).row(0, named=True)
        assert bar["ts"] == FIRST_CUTOFF  # the next 1m bar, not the next session's daily bar
        # the paper broker's slippage is 0 bps unless configured: the open, to the price quantum
        assert Decimal(str(row["price"])) == Decimal(str(bar["open"])).quantize(Decimal("0.0001"))
        assert row["ts"] == bar["ts"]
    # the second run traded the new bars' signals too, each once
    second = story["orders_second"]
    assert second["client_order_id"].n_unique() == second.height >= first.height


def test_sensor_launches_one_run_per_traded_bar_size(story, monkeypatch):
    from trading_pipeline.defs.orders import signals_to_orders

    assert story["sensor_on"] == ["1m"]
    monkeypatch.setenv("TRADING_RULES_FILE", str(story["on_rules"]))
    get_settings.cache_clear()
    inst = runs.instance(get_settings())
    with dg.build_sensor_context(instance=inst) as ctx:
        reqs = [r for r in signals_to_orders(ctx) or [] if isinstance(r, dg.RunRequest)]
    daily, intraday = reqs
    assert "ops" not in daily.run_config  # the daily run as before
    assert intraday.run_key == f"{daily.run_key}-1m"
    assert intraday.run_config["ops"]["ops__orders"]["config"] == {"timeframe": "1m"}


def test_trade_setting_leaves_dbt_vars_alone(story):
    """rules.yaml's `trade` is not a signal rule: dbt's vars (and so every scan's fingerprint)
    are the same with it on, off or absent; by default daily scans trade and intraday ones not."""
    from trading_pipeline.scans.rules import dbt_vars, load_rules

    default = load_rules(PROJECT_DIR / "rules.yaml")
    assert dbt_vars(load_rules(story["on_rules"])) == dbt_vars(default) == dbt_vars(load_rules(story["off_rules"]))
    assert {s.name: s.trades for s in default.scans} == {
        s.name: s.timeframe == "daily" for s in default.scans}


def test_bad_input_is_refused_with_the_fix(story, tmp_path, monkeypatch):
    from trading_pipeline.scans.rules import RulesError, load_rules

    before = ops_orders()
    r = trade("2m", check=False)
    assert not r.success
    msg = runs.failure_message(r)
    assert "unknown timeframe '2m'" in msg and "1m" in msg and "Nothing was traded" in msg
    assert ops_orders()["client_order_id"].to_list() == before["client_order_id"].to_list()
    bad = tmp_path / "rules.yaml"
    doc = yaml.safe_load((PROJECT_DIR / "rules.yaml").read_text())
    doc["scans"][1]["trade"] = "sometimes"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(RulesError, match="trade"):
        load_rules(bad)
    # an intraday order run cannot tell what trades: it stops, says so, and places nothing
    monkeypatch.setenv("TRADING_RULES_FILE", str(bad))
    get_settings.cache_clear()
    try:
        r = trade("1m", check=False)
        assert not r.success
        msg = runs.failure_message(r)
        assert "cannot tell which intraday scans trade" in msg and "trade" in msg and "nothing was traded" in msg
        assert ops_orders()["client_order_id"].to_list() == before["client_order_id"].to_list()
    finally:
        monkeypatch.setenv("TRADING_RULES_FILE", str(story["on_rules"]))
        get_settings.cache_clear()
