"""Universes (marketdata/universes.py): each kind, point-in-time membership (filters on bars up to
the session only, delistings), clear errors naming file/universe/field, Alpaca's asset list
through the protocol stub, the eod/intraday schedules with a source that needs symbols (run
request with the universe's symbols, or a SkipReason naming the fix), a real Dagster load of the
scheduled run config, the scan path (rules.yaml `universe: NAME` -> dbt vars) and the CLI.

Every test writes its own bars into a real warehouse under a temp TRADING_HOME."""

# ruff: noqa: F811  (fixtures are imported from tests.stubs.alpaca_fixtures)
from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl
import pytest
from typer.testing import CliRunner

from tests.stubs.alpaca_fixtures import STUB_KEY, STUB_SECRET, alpaca_stub  # noqa: F401
from tests.stubs.alpaca_stub import AlpacaStub
from trading_pipeline.cli.main import app
from trading_pipeline.marketdata import corporate_actions, warehouse
from trading_pipeline.marketdata.bars import SOURCE_SCHEMA
from trading_pipeline.marketdata.ingest import Batch, ingest
from trading_pipeline.marketdata.universes import (
    UniverseError,
    load_universes,
    resolve_named,
    scheduled_symbols,
)
from trading_pipeline.scans.rules import RulesError, dbt_vars, fingerprint, load_rules
from trading_pipeline.settings import get_settings

NY = ZoneInfo("America/New_York")
runner = CliRunner()
# XNYS sessions of January 2024 (the 15th is Martin Luther King Jr. Day)
SESSIONS = [date(2024, 1, d) for d in (2, 3, 4, 5, 8, 9, 10, 11, 12, 16)]
JAN5, JAN8, JAN9, JAN10, JAN12 = (date(2024, 1, d) for d in (5, 8, 9, 10, 12))


def _bars(symbol: str, closes: dict[date, float], volume: float = 1_000_000) -> list[dict]:
    return [{"symbol": symbol, "timeframe": "1d", "ts": datetime.combine(d, datetime.min.time()),
             "open": c, "high": c * 1.01, "low": c * 0.99, "close": c, "volume": volume} for d, c in closes.items()]


def _store(rows: list[dict]) -> None:
    with warehouse.writer(get_settings().warehouse_path) as con:
        ingest(con, [Batch("test:1d", pl.DataFrame(rows, schema=SOURCE_SCHEMA))])


@pytest.fixture
def market(trading_home, tmp_path, monkeypatch):
    """A warehouse with five symbols over January 2024:
    AAA  $10, 1M shares a day from Jan 2 (always in);
    PENNY $2 until Jan 8, $8 from Jan 9 (above min_price 5 only from Jan 9);
    DELI $20, bars to Jan 9, a delisting with ex-date Jan 10;
    LATE $30, first bar Jan 9;
    THIN $50 on 1,000 shares a day (average dollar volume 50k)."""
    rows = (_bars("AAA", dict.fromkeys(SESSIONS, 10.0))
            + _bars("PENNY", {d: (2.0 if d <= JAN8 else 8.0) for d in SESSIONS})
            + _bars("DELI", {d: 20.0 for d in SESSIONS if d <= JAN9})
            + _bars("LATE", {d: 30.0 for d in SESSIONS if d >= JAN9})
            + _bars("THIN", dict.fromkeys(SESSIONS, 50.0), volume=1_000))
    _store(rows)
    actions = tmp_path / "actions.csv"
    actions.write_text("symbol,ex_date,kind\nDELI,2024-01-10,delisting\n")
    with warehouse.writer(get_settings().warehouse_path) as con:
        corporate_actions.load(con, actions)
    return tmp_path


def _universes(tmp_path: Path, monkeypatch, text: str) -> Path:
    path = tmp_path / "universes.yaml"
    path.write_text(text)
    monkeypatch.setenv("TRADING_UNIVERSES_FILE", str(path))
    get_settings.cache_clear()
    return path


LIQUID = """
universes:
  liquid:
    symbols: [AAA, PENNY, DELI, LATE, THIN, NEVER]
    min_price: 5
    min_avg_dollar_volume: 1000000
    adv_window: 3
  priced:
    symbols: [AAA, PENNY]
    min_price: 5
  nothing:
    symbols: [AAA, PENNY]
    min_price: 1000
"""


def _at(name: str, day: date, **kw) -> list[str]:
    return resolve_named(name, get_settings(), day, **kw).symbols


def test_static_list_point_in_time_with_reasons(market, monkeypatch):
    _universes(market, monkeypatch, LIQUID)
    jan8 = resolve_named("liquid", get_settings(), JAN8)
    assert jan8.symbols == ["AAA", "DELI"]
    why = {m.symbol: m.reason for m in jan8.members}
    assert why["PENNY"].startswith("min_price: close 2 on 2024-01-08 is below 5")
    assert why["LATE"] == "no bars: no bar on or before 2024-01-08"
    assert why["NEVER"] == "no bars: no bar on or before 2024-01-08"
    assert why["THIN"].startswith("min_avg_dollar_volume: 50,000 over 3 session(s)")
    assert why["AAA"].startswith("in: first bar 2024-01-02; close 10 >= 5; avg dollar volume 10,000,000")
    # Jan 9: PENNY's close reached 8 and LATE has its first bar; DELI still trades
    assert _at("liquid", JAN9) == ["AAA", "DELI", "LATE", "PENNY"]
    # Jan 10: DELI's delisting ex-date
    jan10 = resolve_named("liquid", get_settings(), JAN10)
    assert jan10.symbols == ["AAA", "LATE", "PENNY"]
    assert {m.symbol: m.reason for m in jan10.members}["DELI"].startswith("delisted: delisting ex-date 2024-01-10")


def test_filters_use_no_bar_after_the_session(market, monkeypatch):
    """PENNY trades above min_price from Jan 9: on every earlier session it is out, though the
    warehouse already holds the later bars."""
    _universes(market, monkeypatch, LIQUID)
    for day in SESSIONS:
        assert ("PENNY" in _at("priced", day)) is (day >= JAN9), day
    # the delisted symbol is in on every session before its ex-date and out on every one after
    for day in SESSIONS:
        assert ("DELI" in _at("liquid", day)) is (day < JAN10), day


def test_file_kinds_lines_and_csv(market, monkeypatch):
    (market / "list.txt").write_text("# watch list\nAAA\n\nlate\n")
    (market / "list.csv").write_text("name,Symbol\nA,AAA\nT,THIN\n")
    _universes(market, monkeypatch, "universes:\n  lines: {file: list.txt}\n  table: {file: list.csv}\n")
    assert _at("lines", JAN8) == ["AAA"]  # LATE has no bar before Jan 9
    assert _at("lines", JAN12) == ["AAA", "LATE"]
    assert _at("table", JAN12) == ["AAA", "THIN"]


def test_stored_kind_and_ib_list(market, monkeypatch):
    _universes(market, monkeypatch, """
universes:
  everything: {stored: true}
  everything_liquid: {stored: true, min_avg_dollar_volume: 1000000}
  ib_list: {broker: ib, symbols: [AAA, THIN, ZZZ]}
""")
    assert _at("everything", JAN8) == ["AAA", "DELI", "PENNY", "THIN"]
    assert _at("everything", JAN12) == ["AAA", "LATE", "PENNY", "THIN"]
    assert _at("everything_liquid", JAN12) == ["AAA", "LATE", "PENNY"]
    assert _at("ib_list", JAN12) == ["AAA", "THIN"]
    # a scheduled ingest fetches the symbol with no bars yet, so that it can be judged
    assert _at("ib_list", JAN12, for_ingest=True) == ["AAA", "THIN", "ZZZ"]


def test_exchanges_from_stored_metadata(market, monkeypatch):
    """The symbols were stored on XNYS (the default calendar): NYSE matches its ISO code."""
    _universes(market, monkeypatch, """
universes:
  nyse: {symbols: [AAA, NEVER], exchanges: [NYSE]}
  nasdaq: {symbols: [AAA], exchanges: [NASDAQ]}
""")
    nyse = resolve_named("nyse", get_settings(), JAN12)
    assert nyse.symbols == ["AAA"]
    assert {m.symbol: m.reason for m in nyse.members}["NEVER"].startswith("exchange unknown")
    nasdaq = resolve_named("nasdaq", get_settings(), JAN12)
    assert nasdaq.symbols == [] and nasdaq.members[0].reason == "exchange: XNYS is not in ['NASDAQ']"


def test_empty_universe_says_why_and_what_to_do(market, monkeypatch):
    path = _universes(market, monkeypatch, LIQUID)
    res = resolve_named("nothing", get_settings(), JAN12)
    assert res.symbols == []
    msg = res.empty_message(path)
    assert f"universe 'nothing' ({path}) resolves to no symbols on 2024-01-12" in msg
    assert "all 2 candidates dropped (min_price)" in msg
    assert "trading universe show nothing --date 2024-01-12 --verbose" in msg


@pytest.mark.parametrize(("body", "field", "problem"), [
    ("u: {symbols: [AAA], min_price: -1}", "min_price", "greater than or equal to 0"),
    ("u: {symbols: [AAA], adv_window: 0}", "adv_window", "greater than or equal to 1"),
    ("u: {symbols: [AAA], colour: red}", "colour", "is not a known field"),
    ("u: {broker: ib}", "", "broker: ib has no asset list"),
    ("u: {broker: robinhood}", "broker", "'alpaca' or 'ib'"),
    ("u: {min_price: 5}", "", "needs one of symbols: [..], file: PATH, stored: true, broker"),
    ("u: {symbols: [AAA], stored: true}", "", "give only one of symbols, file, stored"),
    ("u: {symbols: [\"A'B\"]}", "", "symbols: [\"A'B\"] are not symbols"),
    ("u: {file: missing.txt}", "", "file "),
])
def test_bad_file_names_file_universe_and_field(tmp_path, body, field, problem):
    path = tmp_path / "universes.yaml"
    path.write_text("universes:\n  " + body + "\n  good: {symbols: [AAA]}\n")
    with pytest.raises(UniverseError) as err:
        load_universes(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: universe 'u': {field}"), msg
    assert problem in msg, msg
    assert "'good'" not in msg  # only the bad universe is named


def test_bad_symbol_file_and_bad_yaml(tmp_path, trading_home):
    (tmp_path / "bad.csv").write_text("ticker,weight\nAAA,1\n")
    (tmp_path / "worse.txt").write_text("AAA\nnot a symbol\n")
    path = tmp_path / "universes.yaml"
    path.write_text("universes:\n  c: {file: bad.csv}\n  t: {file: worse.txt}\n")
    for name, text in (("c", "a CSV needs a 'symbol' column (columns: ticker, weight)"),
                       ("t", "not symbols: line 2: 'not a symbol'")):
        settings = get_settings().model_copy(update={"universes_file": path})
        with pytest.raises(UniverseError) as err:
            resolve_named(name, settings, JAN12)
        assert str(err.value).startswith(f"{path}: universe '{name}': file {tmp_path}/") and text in str(err.value)
    path.write_text("universes: [a, b]\n")
    with pytest.raises(UniverseError, match="expected a mapping 'universes:'"):
        load_universes(path)
    with pytest.raises(UniverseError, match="universes file not found; copy universes.example.yaml"):
        load_universes(tmp_path / "nope.yaml")


def test_the_shipped_example_is_valid():
    universes = load_universes(Path(__file__).resolve().parents[2] / "universes.example.yaml")
    assert {u.kind for u in universes.values()} == {"symbols", "broker:alpaca", "broker:ib", "stored"}


# ---- Alpaca's asset list through the protocol stub ---------------------------------------


def _alpaca_env(monkeypatch, stub: AlpacaStub) -> None:
    monkeypatch.setenv("TRADING_ALPACA_API_KEY", STUB_KEY)
    monkeypatch.setenv("TRADING_ALPACA_SECRET_KEY", STUB_SECRET)
    monkeypatch.setenv("TRADING_ALPACA_URL_OVERRIDE", stub.url)
    monkeypatch.setenv("TRADING_ALPACA_DATA_URL_OVERRIDE", stub.url)
    get_settings.cache_clear()


ALPACA_UNIVERSES = """
universes:
  alpaca_nyse: {broker: alpaca, exchanges: [NYSE], min_price: 5}
  alpaca_all: {broker: alpaca}
"""


def test_alpaca_asset_list_via_stub(market, monkeypatch, alpaca_stub):
    alpaca_stub.set_assets([
        {"symbol": "AAA", "exchange": "NYSE"},
        {"symbol": "PENNY", "exchange": "NYSE"},
        {"symbol": "LATE", "exchange": "NASDAQ"},
        {"symbol": "HALT", "exchange": "NYSE", "tradable": False},
        {"symbol": "GONE", "exchange": "NYSE", "status": "inactive"},
        {"symbol": "BTCUSD", "exchange": "CRYPTO", "class": "crypto"},
        {"symbol": "NEWCO", "exchange": "NYSE"},
    ])
    _alpaca_env(monkeypatch, alpaca_stub)
    _universes(market, monkeypatch, ALPACA_UNIVERSES)
    res = resolve_named("alpaca_all", get_settings(), JAN12)
    assert [m.symbol for m in res.members] == ["AAA", "LATE", "NEWCO", "PENNY"]  # active, tradable, us_equity
    assert res.symbols == ["AAA", "LATE", "PENNY"]  # NEWCO has no bars yet
    assert _at("alpaca_nyse", JAN8) == ["AAA"]  # LATE is on NASDAQ, PENNY below $5 on Jan 8
    assert _at("alpaca_nyse", JAN12) == ["AAA", "PENNY"]
    assert _at("alpaca_nyse", JAN12, for_ingest=True) == ["AAA", "NEWCO", "PENNY"]
    assert ("GET", "/v2/assets") in alpaca_stub.requests


def test_alpaca_asset_list_errors_name_the_settings(market, monkeypatch, alpaca_stub):
    _alpaca_env(monkeypatch, alpaca_stub)
    monkeypatch.setenv("TRADING_ALPACA_SECRET_KEY", "wrong")
    _universes(market, monkeypatch, ALPACA_UNIVERSES)
    with pytest.raises(UniverseError, match="HTTP 401.*TRADING_ALPACA_API_KEY"):
        resolve_named("alpaca_all", get_settings(), JAN12)
    monkeypatch.delenv("TRADING_ALPACA_API_KEY")
    get_settings.cache_clear()
    with pytest.raises(UniverseError, match="needs API keys"):
        resolve_named("alpaca_all", get_settings(), JAN12)


# ---- the schedules -----------------------------------------------------------------------


def _eod(day: date):
    from trading_pipeline.defs.scans import eod_scan

    with dg.build_schedule_context(scheduled_execution_time=datetime.combine(
            day, datetime.min.time(), NY).replace(hour=16, minute=15)) as ctx:
        return eod_scan(ctx)


def _intraday(day: date):
    from trading_pipeline import runs
    from trading_pipeline.defs.scans import intraday_scan

    with dg.build_schedule_context(scheduled_execution_time=datetime.combine(
            day, datetime.min.time(), NY).replace(hour=11, minute=0),
            instance=runs.instance(get_settings())) as ctx:
        return intraday_scan(ctx)


def test_schedules_fetch_the_universe_or_skip_saying_why(market, monkeypatch, alpaca_stub):
    _alpaca_env(monkeypatch, alpaca_stub)
    monkeypatch.setenv("TRADING_DATA_SOURCE", "alpaca")
    path = _universes(market, monkeypatch, LIQUID)
    # no TRADING_UNIVERSE: both skip, naming the setting
    for tick in (_eod(JAN12), _intraday(JAN12)):
        assert isinstance(tick, dg.SkipReason)
        assert "the alpaca source needs explicit symbols and TRADING_UNIVERSE is not set" in tick.skip_message
    monkeypatch.setenv("TRADING_UNIVERSE", "liquid")
    get_settings.cache_clear()
    req = _eod(JAN12)
    assert isinstance(req, dg.RunRequest) and req.run_key == "eod-2024-01-12"
    config = req.run_config["ops"]["raw__bars_daily"]["config"]
    # NEVER has no bars yet: a scheduled ingest fetches it so it can be judged
    assert config == {"source": "alpaca", "start": "2024-01-12", "end": "2024-01-12",
                      "symbols": ["AAA", "LATE", "NEVER", "PENNY"]}
    intraday = _intraday(JAN12).run_config["ops"]["raw__bars_intraday"]["config"]
    assert intraday["symbols"] == ["AAA", "LATE", "NEVER", "PENNY"]
    # a universe resolving to nothing: skip, with the reason and the fix
    monkeypatch.setenv("TRADING_UNIVERSE", "nothing")
    get_settings.cache_clear()
    skip = _eod(JAN12)
    assert isinstance(skip, dg.SkipReason)
    assert f"TRADING_UNIVERSE=nothing: universe 'nothing' ({path}) resolves to no symbols" in skip.skip_message
    # a name not in the file
    monkeypatch.setenv("TRADING_UNIVERSE", "typo")
    get_settings.cache_clear()
    assert "no universe 'typo' (universes: liquid, nothing, priced)" in _eod(JAN12).skip_message


def test_sources_with_their_own_universe_send_no_symbols(trading_home, monkeypatch):
    monkeypatch.setenv("TRADING_DATA_SOURCE", "sample")
    get_settings.cache_clear()
    assert scheduled_symbols(get_settings(), "sample", "2024-01-12") == (None, None)
    config = _eod(JAN12).run_config["ops"]["raw__bars_daily"]["config"]
    assert "symbols" not in config and config["source"] == "sample"


def test_scheduled_run_config_loads_the_universe_from_alpaca(market, monkeypatch, alpaca_stub):
    """The eod tick's run config, run for real (the bars asset, in process) against the stub:
    it fetches the universe's symbols and stores their bars for the session."""
    from trading_pipeline.defs.bars import bars_daily
    from trading_pipeline.defs.resources import WarehouseResource

    _alpaca_env(monkeypatch, alpaca_stub)
    monkeypatch.setenv("TRADING_DATA_SOURCE", "alpaca")
    monkeypatch.setenv("TRADING_UNIVERSE", "priced")
    _universes(market, monkeypatch, LIQUID)
    day = date(2024, 1, 17)
    alpaca_stub.set_bars(pl.DataFrame(
        _bars("AAA", {day: 11.0}) + _bars("PENNY", {day: 9.0}) + _bars("THIN", {day: 51.0}), schema=SOURCE_SCHEMA))
    req = _eod(day)
    assert req.run_config["ops"]["raw__bars_daily"]["config"]["symbols"] == ["AAA", "PENNY"]
    result = dg.materialize([bars_daily], run_config=req.run_config,
                            resources={"warehouse": WarehouseResource()}, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    con = warehouse.connect(get_settings().warehouse_path, read_only=True)
    try:
        got = con.execute("SELECT symbol, close FROM raw.bars_daily WHERE session_date = ? ORDER BY symbol",
                          [day]).fetchall()
    finally:
        con.close()
    assert got == [("AAA", 11.0), ("PENNY", 9.0)]  # THIN is not in the universe: not fetched
    assert ("GET", "/v2/stocks/bars") in alpaca_stub.requests


# ---- the scan path -----------------------------------------------------------------------

RULES = """
scans:
  - {name: liquid_breakouts, kind: breakout, timeframe: daily, universe: liquid}
  - {name: listed, kind: breakout, timeframe: daily, universe: [AAA, THIN]}
  - {name: everyone, kind: breakout, timeframe: daily}
  - {name: nobody, kind: breakout, timeframe: daily, universe: nothing}
"""


def test_a_scan_naming_a_universe_passes_its_rule_not_a_sessions_members(market, monkeypatch):
    """dbt gets the universe's candidates and filters, and int_universe_members judges every
    session (tests/scans/test_universe_members.py); the vars do not depend on a session."""
    _universes(market, monkeypatch, LIQUID)
    rules_file = market / "rules.yaml"
    rules_file.write_text(RULES)
    out = dbt_vars(load_rules(rules_file))
    scans = {s["name"]: s for s in out["scans"]}
    specs = {u["name"]: u for u in out["universes"]}
    assert scans["liquid_breakouts"]["universe"] == "liquid"
    # the candidates narrow the series read; membership per session comes from the table
    assert scans["liquid_breakouts"]["symbols"] == ["AAA", "DELI", "LATE", "NEVER", "PENNY", "THIN"]
    assert (specs["liquid"]["min_price"], specs["liquid"]["adv_window"]) == (5, 3)
    assert scans["nobody"]["symbols"] == ["AAA", "PENNY"] and set(specs) == {"liquid", "nothing"}
    # lists and "all" are unchanged, and carry no universe key
    assert scans["listed"]["symbols"] == ["AAA", "THIN"] and "universe" not in scans["listed"]
    assert scans["everyone"]["symbols"] is None
    assert scans["listed"]["fingerprint"] == fingerprint({k: v for k, v in scans["listed"].items()
                                                          if k != "fingerprint"})


def test_a_scan_naming_an_unknown_universe_is_a_rules_error(market, monkeypatch):
    path = _universes(market, monkeypatch, LIQUID)
    rules_file = market / "rules.yaml"
    rules_file.write_text("scans:\n  - {name: s, kind: breakout, timeframe: daily, universe: AAPL}\n")
    with pytest.raises(RulesError) as err:
        load_rules(rules_file)
    assert str(err.value) == (f"rules.yaml: scan 's': universe 'AAPL' is not in {path} "
                              "(universes: liquid, nothing, priced; a single symbol is written [AAPL])")
    # the universes file is checked when the rules are: a bad one fails the rules that use it
    path.write_text("universes:\n  liquid: {symbols: [AAA], min_price: cheap}\n")
    with pytest.raises(RulesError, match=f"rules.yaml: scan 's': universe 'AAPL': {path}: universe 'liquid': min_price"):
        load_rules(rules_file)
    rules_file.write_text("scans:\n  - {name: s, kind: breakout, timeframe: daily, universe: 'not a name'}\n")
    with pytest.raises(RulesError, match="universe must be 'all', a list of symbols or a universe name"):
        load_rules(rules_file)


# ---- the CLI -----------------------------------------------------------------------------


def cli(*args: str, code: int = 0):
    res = runner.invoke(app, list(args))
    assert res.exit_code == code, res.output
    return json.loads(res.stdout) if "--json" in args and code == 0 else res.output


def test_cli_list_and_show(market, monkeypatch):
    path = _universes(market, monkeypatch, LIQUID)
    monkeypatch.setenv("TRADING_UNIVERSE", "liquid")
    get_settings.cache_clear()
    listed = cli("universe", "list", "--json")
    assert listed["file"] == str(path) and listed["scheduled"] == "liquid"
    assert [(u["name"], u["kind"], u["filters"]) for u in listed["universes"]][0] == (
        "liquid", "symbols", {"min_price": 5.0, "min_avg_dollar_volume": 1_000_000.0, "adv_window": 3})
    assert "liquid (TRADING_UNIVERSE)" in cli("universe", "list")
    shown = cli("universe", "show", "liquid", "--date", "2024-01-10", "--json")
    assert shown["session"] == "2024-01-10" and shown["symbols"] == ["AAA", "LATE", "PENNY"]
    reasons = {m["symbol"]: (m["kept"], m["reason"]) for m in shown["members"]}
    assert reasons["DELI"][0] is False and reasons["DELI"][1].startswith("delisted")
    assert reasons["AAA"][0] is True
    text = cli("universe", "show", "liquid", "--date", "2024-01-10", "--verbose")
    assert "3 in, 3 dropped" in text and "delisted: delisting ex-date 2024-01-10" in text
    assert "AAA LATE PENNY" in cli("universe", "show", "liquid", "--date", "2024-01-10")
    assert "resolves to no symbols on 2024-01-10" in cli("universe", "show", "nothing", "--date", "2024-01-10")
    # bad input: exit 2 with the problem and what to do
    out = cli("universe", "show", "typo", code=2)
    assert "no universe 'typo'" in out and "trading universe list" in out
    assert "is not a date" in cli("universe", "show", "liquid", "--date", "10/01/2024", code=2)
    path.write_text("universes:\n  u: {symbols: [AAA], min_price: cheap}\n")
    assert "universe 'u': min_price" in cli("universe", "list", code=2)


def test_dbt_scan_covers_only_the_universe(trading_home, tmp_path, monkeypatch):
    """The scan path for real: `dbt run` with rules naming universes (resolved from the settings'
    warehouse for its newest session) writes signals only for the members; 'all' still covers
    every symbol and a universe resolving to nothing gets no signals (not every symbol)."""
    import yaml

    from tests.scans.dbt_fixtures import load, query, synthetic
    from trading_pipeline.scans import dbt_runner

    wh = tmp_path / "w.duckdb"
    monkeypatch.setenv("TRADING_WAREHOUSE", str(wh))
    get_settings.cache_clear()
    bars = synthetic(6, date(2022, 1, 1), date(2023, 6, 30), "1d")
    load(wh, bars)
    every = sorted(bars["symbol"].unique().to_list())
    pick = every[:2]
    _universes(tmp_path, monkeypatch, yaml.safe_dump({"universes": {
        "pick": {"symbols": pick}, "none": {"symbols": pick, "min_price": 1e9}}}))
    scan = {"kind": "breakout", "timeframe": "daily", "params": {"volume_multiple": 1.0}}
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"scans": [{"name": "everyone", **scan}, {"name": "picked", "universe": "pick", **scan},
                                               {"name": "nobody", "universe": "none", **scan}]}))
    dbt_runner.run_dbt(["run"], wh, rules, target_path=tmp_path / "dbt_target")
    got = {s: set(syms) for s, syms in query(
        wh, "select scan, list(distinct symbol) as syms from marts.signals group by scan").rows()}
    assert got["picked"] and got["picked"] <= set(pick)
    assert got["everyone"] - set(pick)  # other symbols have signals where the scan covers all
    assert "nobody" not in got
