"""Working orders know their bar size, and late signals have a cut-off (issue 19 follow-up):
real in-process ``trade_signals`` runs on a real warehouse (DuckLake) and a real ops store.

The story, on bars and signals this test writes itself (one intraday scan, ``breakout_intraday``,
trading two bar sizes): a manual order and a daily scan order are working; the 1m run places
the fresh 1m signal and skips the stale one (counted in ``skipped_stale``); the 5m run places its
two (the newest bar's and the previous bar's); new 5m bars fill the 5m orders at 5m bars while
the 1m order waits; new 1m bars fill the 1m order at a 1m bar while a 5m order waits; re-runs
place nothing. The manual order is moved by no intraday run, and each order records its bar size
(``orders.timeframe``, in ``trading orders --json`` and the API's order model). A daily replay of
an old session trades that session's signal: staleness counts the run's own bars, not today's.

Also the ops-store revision 0011 on a store made at 0010, and the staleness rule itself.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa
import yaml

from trading_pipeline import runs
from trading_pipeline.marketdata import warehouse
from trading_pipeline.settings import PROJECT_DIR, get_settings

pytestmark = [pytest.mark.timeout(900)]

D = Decimal
SCAN, DAILY_SCAN = "breakout_intraday", "breakout_daily"
SESSION = date(2024, 3, 5)
DAILY_SESSIONS = [date(2024, 2, 26) + timedelta(days=i) for i in range(8) if (date(2024, 2, 26) + timedelta(days=i)).weekday() < 5]
LAST_DAILY = DAILY_SESSIONS[-1]  # 2024-03-04: the daily runs' session
OLD_DAILY = date(2024, 3, 1)  # a replayed session
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH"]


def at(hh: int, mm: int) -> datetime:
    return datetime(SESSION.year, SESSION.month, SESSION.day, hh, mm)


def price(symbol: str) -> float:
    return 100.0 + 10 * SYMBOLS.index(symbol)


def bars(timeframe: str, start: datetime, end: datetime, symbols=SYMBOLS) -> pl.DataFrame:
    """Bars of ``timeframe`` starting in [start, end]: each opens at a price that says which bar
    size and minute it is (1m opens end in .01 steps, 5m opens in .5 steps), so a fill's price
    tells which feed filled it."""
    step = 5 if timeframe == "5m" else 1
    rows, t = [], start
    while t <= end:
        minute = (t - at(14, 30)).seconds // 60
        for sym in symbols:
            o = price(sym) + (0.5 * (minute // 5 + 1) if timeframe == "5m" else 0.01 * (minute + 1))
            rows.append({"symbol": sym, "timeframe": timeframe, "ts": t, "open": o, "high": o + 0.2, "low": o - 0.2,
                         "close": o + 0.1, "volume": 100_000.0, "session_date": SESSION})
        t += timedelta(minutes=step)
    return pl.DataFrame(rows)


def daily_bars(days: list[date], symbols=SYMBOLS) -> pl.DataFrame:
    return pl.DataFrame([
        {"symbol": s, "timeframe": "1d", "ts": datetime(d.year, d.month, d.day), "open": price(s), "high": price(s) + 1,
         "low": price(s) - 1, "close": price(s), "volume": 1_000_000.0, "session_date": d}
        for d in days for s in symbols])


def load(frame: pl.DataFrame) -> None:
    table = warehouse.bars_table(frame["timeframe"][0])
    with warehouse.writer(get_settings().warehouse_path) as con:
        warehouse.upsert_bars(con, table, frame.select(
            "symbol", "timeframe", "ts", "session_date", "open", "high", "low", "close", "volume"), "test")


SIGNALS_DDL = """CREATE TABLE IF NOT EXISTS marts.signals (symbol VARCHAR, timeframe VARCHAR, ts TIMESTAMP,
    session_date DATE, scan VARCHAR, kind VARCHAR, direction VARCHAR, score DOUBLE, reason VARCHAR)"""


def add_signal(symbol: str, timeframe: str, ts: datetime, scan: str = SCAN, session: date = SESSION) -> None:
    with warehouse.writer(get_settings().warehouse_path) as con:
        con.execute(SIGNALS_DDL)
        con.execute("INSERT INTO marts.signals VALUES (?, ?, ?, ?, ?, 'breakout_up', 'long', 1.0, 'test signal')",
                    [symbol, timeframe, ts, session, scan])


def trade(timeframe: str, session: str = "", *, check: bool = True) -> dg.ExecuteInProcessResult:
    cfg = {"ops": {"ops__orders": {"config": {"timeframe": timeframe, "session": session}}}}
    r = runs.run_job("trade_signals", get_settings(), run_config=cfg)
    if check:
        assert r.success, runs.failure_message(r)
    return r


def meta(r: dg.ExecuteInProcessResult) -> dict:
    [mat] = [e.materialization for e in r.get_asset_materialization_events()
             if e.asset_key.to_user_string() == "ops/orders"]
    return {k: v.value for k, v in mat.metadata.items()}


def book() -> dict:
    """symbol -> (status, timeframe, fill price, number of events) for every order in the ops store."""
    from trading_pipeline.trading.store import OpsStore

    store = OpsStore.from_settings(get_settings())
    try:
        return {o.symbol: (o.status.value, o.timeframe, o.avg_fill_price, len(store.order_events(o.client_order_id)))
                for o in store.list_orders(limit=1000)}
    finally:
        store.close()


def cli(*args: str):
    from typer.testing import CliRunner

    from trading_pipeline.cli.main import app

    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def rules_trading(tmp: Path) -> Path:
    doc = yaml.safe_load((PROJECT_DIR / "rules.yaml").read_text())
    for scan in doc["scans"]:
        if scan["name"] == SCAN:
            scan["trade"] = True
    path = tmp / "rules-trade.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("timeframes")
    mp.setenv("TRADING_HOME", str(tmp / "trading"))
    for name in ("TRADING_WAREHOUSE", "DAGSTER_HOME", "TRADING_ACCOUNTS_FILE", "TRADING_SIGNAL_MAX_AGE"):
        mp.delenv(name, raising=False)
    mp.setenv("TRADING_RULES_FILE", str(rules_trading(tmp)))
    get_settings.cache_clear()
    out: dict = {}
    load(daily_bars(DAILY_SESSIONS))
    load(bars("1m", at(14, 30), at(14, 49)))
    load(bars("5m", at(14, 30), at(14, 45)))
    add_signal("GGG", "1d", datetime(2024, 3, 4), scan=DAILY_SCAN, session=LAST_DAILY)
    add_signal("HHH", "1d", datetime(2024, 3, 1), scan=DAILY_SCAN, session=OLD_DAILY)  # only a replay trades it
    add_signal("AAA", "1m", at(14, 49))  # the newest 1m bar: placed
    add_signal("BBB", "1m", at(14, 40))  # 9 bars behind: stale
    add_signal("CCC", "5m", at(14, 45))  # the newest 5m bar
    add_signal("DDD", "5m", at(14, 40))  # the previous 5m bar: still fresh (TRADING_SIGNAL_MAX_AGE=1)
    out["manual"] = cli("order", "submit", "FFF", "buy", "5", "--json")["order"]
    out["daily"] = trade("1d")
    out["after_daily"] = book()
    out["m1"] = trade("1m")
    out["after_m1"] = book()
    out["m5"] = trade("5m")
    out["after_m5"] = book()
    load(bars("5m", at(14, 50), at(14, 55)))  # new 5m bars only
    add_signal("EEE", "5m", at(14, 55))
    out["m5_fill"] = trade("5m")
    out["after_m5_fill"] = book()
    load(bars("1m", at(14, 50), at(14, 59)))  # new 1m bars, some after EEE's 5m order
    out["m1_fill"] = trade("1m")
    out["after_m1_fill"] = book()
    out["m1_again"], out["m5_again"], out["daily_again"] = trade("1m"), trade("5m"), trade("1d")
    out["after_again"] = book()
    out["replay"] = trade("1d", session=OLD_DAILY.isoformat())
    out["after_replay"] = book()
    out["cli_orders"] = cli("orders", "--json")
    load(daily_bars([SESSION]))  # a daily bar after every working order: `trading order sync`
    out["before_sync"] = book()
    out["sync"] = cli("order", "sync", "--json")
    out["after_sync"] = book()
    yield out
    mp.undo()
    get_settings.cache_clear()


def test_orders_record_their_signals_bar_size(story):
    b = story["after_m5"]
    assert {s: b[s][1] for s in ("AAA", "CCC", "DDD", "GGG", "FFF")} == {
        "AAA": "1m", "CCC": "5m", "DDD": "5m", "GGG": "1d", "FFF": None}
    assert story["manual"]["timeframe"] is None
    shown = {o["symbol"]: o["timeframe"] for o in story["cli_orders"]}
    assert shown["AAA"] == "1m" and shown["EEE"] == "5m" and shown["GGG"] == "1d" and shown["FFF"] is None
    from trading_api.schemas import order_model
    from trading_pipeline.trading.store import OpsStore

    store = OpsStore.from_settings(get_settings())
    try:
        [aaa] = store.list_orders(symbol="AAA")
        assert order_model(aaa).model_dump()["timeframe"] == "1m"
    finally:
        store.close()


def test_a_late_signal_is_skipped_and_counted_a_fresh_one_placed(story):
    m1 = meta(story["m1"])
    assert m1["signals"] == 2 and m1["skipped_stale"] == 1 and m1["signal_max_age"] == 1
    [stale] = m1["stale_signals"]
    assert stale["symbol"] == "BBB" and stale["signal_ts"] == str(at(14, 40)) and "9 1m bars old" in stale["reason"]
    assert m1["actions"] == {"submitted": 1, "skipped_stale": 1}
    assert "BBB" not in story["after_again"]  # never placed, by any later run either
    assert meta(story["m5"])["skipped_stale"] == 0  # the previous 5m bar's signal is fresh at max age 1
    assert story["after_m1"]["AAA"][0] == "accepted"
    # later: AAA (10 bars old now) has its order, replayed as "already in the ops store"; BBB still stale
    m = meta(story["m1_fill"])
    assert m["skipped_stale"] == 1 and m["actions"] == {"skipped": 1, "skipped_stale": 1}


def test_a_run_of_one_bar_size_never_moves_the_others_orders(story):
    # the 5m run with new 5m bars fills the 5m orders at the 14:50 5m bar; the 1m order waits
    after = story["after_m5_fill"]
    for sym in ("CCC", "DDD"):
        assert after[sym][0] == "filled"
        assert after[sym][2] == D(str(round(price(sym) + 0.5 * 5, 2)))  # the 14:50 5m bar's open
    assert after["AAA"] == story["after_m5"]["AAA"]  # untouched: same status, same events
    # the 1m run with new 1m bars fills the 1m order at the 14:50 1m bar; the 5m order placed at
    # 14:55 (1m bars after it exist) waits
    after = story["after_m1_fill"]
    assert after["AAA"][0] == "filled" and after["AAA"][2] == D(str(round(price("AAA") + 0.01 * 21, 2)))
    assert after["EEE"][0] == "accepted" and after["EEE"] == story["after_m5_fill"]["EEE"]
    # the daily order (a daily bar after it does not exist yet) and the manual order: no intraday run moved them
    for snapshot in ("after_m1", "after_m5", "after_m5_fill", "after_m1_fill"):
        assert story[snapshot]["GGG"] == story["after_daily"]["GGG"]
        assert story[snapshot]["FFF"] == story["after_daily"]["FFF"]
    assert story["after_daily"]["FFF"][0] == "accepted"


def test_trading_order_sync_moves_daily_and_manual_orders_only(story):
    """`trading order sync` advances the paper broker on daily bars: the daily and manual working
    orders fill at the new daily bar's open, an intraday order waits for its own bar size."""
    before, after = story["before_sync"], story["after_sync"]
    working = {s: v for s, v in before.items() if v[0] == "accepted"}
    assert {s for s, v in working.items() if v[1] in ("1m", "5m")} == {"EEE"}
    assert {s for s, v in working.items() if v[1] in (None, "1d")} >= {"FFF", "GGG"}
    for sym, v in working.items():
        if v[1] in (None, "1d"):
            assert after[sym][0] == "filled", sym
        else:
            assert after[sym] == v, sym  # same status, same events
    assert {o["symbol"] for o in story["sync"]["changed"]} >= {"FFF", "GGG"} and "EEE" not in {
        o["symbol"] for o in story["sync"]["changed"]}


def test_reruns_place_nothing_new(story):
    assert story["after_again"] == story["after_m1_fill"]
    for key in ("m1_again", "m5_again", "daily_again"):
        assert "submitted" not in meta(story[key])["actions"], key


def test_a_replay_of_an_old_session_measures_staleness_against_that_session(story):
    m = meta(story["replay"])
    assert m["session"] == OLD_DAILY.isoformat() and m["skipped_stale"] == 0
    assert m["actions"] == {"submitted": 1}
    assert story["after_replay"]["HHH"][:2] == ("accepted", "1d")
    assert "HHH" not in story["after_again"]  # the daily run for the newest session never took it


# ---- the ops store: revision 0011 on a store made at 0010 --------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> str:
    """A new SQLite file, or a new database on the throwaway Postgres cluster (tests/pg.py)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ops.sqlite'}"
    return request.getfixturevalue("pg_cluster").url(request.getfixturevalue("pg_database"))


def test_revision_0011_keeps_a_0010_stores_orders_and_fills_in_their_bar_size(store_url):
    from trading_pipeline.trading.store import OpsStore, migrations

    url = store_url
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        assert migrations.upgrade(conn, "0010_notifications") == "0010_notifications"
        assert "timeframe" not in {c["name"] for c in sa.inspect(conn).get_columns("orders")}
        rows = [  # id, strategy, signal_ts, parent
            ("daily", DAILY_SCAN, datetime(2024, 3, 4), None),
            ("daily-tp", DAILY_SCAN, None, "daily"),
            ("daily-sl", DAILY_SCAN, None, "daily"),
            ("intraday", SCAN, at(14, 49), None),
            ("manual", "manual", None, None),
        ]
        for coid, strategy, signal_ts, parent in rows:
            conn.execute(sa.text(
                "INSERT INTO orders (client_order_id, account, strategy, symbol, side, order_type, quantity, "
                "time_in_force, status, filled_quantity, signal_ts, cancel_requested, created_at, updated_at, "
                "parent_client_order_id) VALUES (:c, 'paper', :s, 'AAA', 'buy', 'market', '10', 'day', 'accepted', "
                "'0', :ts, :no, :now, :now, :p)"),
                {"c": coid, "s": strategy, "ts": signal_ts, "no": False, "now": at(15, 0), "p": parent})
    engine.dispose()
    store = OpsStore(url)  # opening applies 0011
    try:
        assert store.schema_revision() == migrations.head()
        got = {o.client_order_id: o for o in store.list_orders()}
        assert {k: o.timeframe for k, o in got.items()} == {
            "daily": "1d", "daily-tp": "1d", "daily-sl": "1d", "intraday": None, "manual": None}
        assert {o.status.value for o in got.values()} == {"accepted"} and got["daily"].quantity == D(10)
        with store.transaction() as conn:  # down and up again: the rows stay
            assert migrations.downgrade(conn, "0010_notifications") == "0010_notifications"
        with store.reading() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar() == 5
        store.migrate()
        assert store.get_order("daily").timeframe == "1d" and store.get_order("manual").timeframe is None
    finally:
        store.close()


# ---- the rule itself (trading/decisions.py) ----------------------------------------------------
def test_the_staleness_rule():
    from trading_pipeline.trading.decisions import DecisionRules, Signal, decide, stale_reason
    from trading_pipeline.trading.sizing import Sizing

    row = {"symbol": "AAA", "ts": at(14, 40), "kind": "breakout_up", "direction": "long", "timeframe": "5m",
           "age_bars": 2}
    sig = Signal.from_row(row)
    assert (sig.timeframe, sig.age) == ("5m", 2)
    assert stale_reason(sig, 1) is not None and "2 5m bars old" in stale_reason(sig, 1)
    assert stale_reason(sig, 2) is None and stale_reason(sig, None) is None
    assert stale_reason(Signal.from_row({**row, "age_bars": None}), 0) is None  # no age (a backtest's): never stale
    kw = dict(positions={}, working=set(), prices={"AAA": D(100)}, equity=D(100_000), sizing=Sizing(),
              rules=DecisionRules())
    [skip] = decide([sig], max_age=1, **kw)
    assert skip.rule == "stale"
    [intent] = decide([sig], max_age=2, **kw)
    assert intent.purpose == "entry"


def test_a_bad_max_age_is_refused_with_the_setting_named(monkeypatch):
    from pydantic import ValidationError

    from trading_pipeline.settings import Settings

    monkeypatch.setenv("TRADING_SIGNAL_MAX_AGE", "-1")
    with pytest.raises(ValidationError, match="signal_max_age"):
        Settings()
    monkeypatch.setenv("TRADING_SIGNAL_MAX_AGE", "soon")
    with pytest.raises(ValidationError, match="signal_max_age"):
        Settings()
