"""A scan naming a universe scans each session with that session's members (issue 19 follow-up).

``int_universe_members`` (dbt) judges every (universe, symbol, session) point in time from the
stored bars, delistings and symbols; the signal macros join it. Before, ``dbt_vars`` resolved
the universe once, for the newest session, so a full rebuild scanned old sessions with today's
members. The scans here are ``kind: expr`` with ``when: close > 0``: they fire on every bar they
cover, so a scan's signals on a session are exactly the members that have a bar on it.

The market (daily bars, 50 XNYS sessions from 2024-01-02; every symbol stored on XNYS):
  AAA    $10 on 1M shares, every session;
  CROSS  $2 until session 30, $8 from it: above min_price 5 only from session 30;
  DELI   $20, bars to session 40, a delisting with ex-date session 41;
  LATE   $30, first bar on session 20;
  THIN   $50 on 1,000 shares (average dollar volume 50k).
Each test builds for real (the dbt executable on a DuckDB file under a temp TRADING_HOME).
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from tests.scans.dbt_fixtures import query, synthetic
from trading_pipeline.cli.main import app
from trading_pipeline.marketdata import corporate_actions, warehouse
from trading_pipeline.marketdata.bars import SOURCE_SCHEMA
from trading_pipeline.marketdata.ingest import Batch, ingest
from trading_pipeline.marketdata.universes import (
    MEMBERS_TABLE,
    resolve,
    resolve_named,
    universe_named,
)
from trading_pipeline.scans import dbt_runner
from trading_pipeline.scans.rules import RulesError, dbt_vars, load_rules
from trading_pipeline.settings import get_settings

SESSIONS: list[date] = synthetic(1, date(2024, 1, 2), date(2024, 3, 29), "1d")["session_date"].to_list()[:50]
CROSS_AT, LATE_AT, DELI_LAST, SPLIT = 30, 20, 40, 25
DELISTED = SESSIONS[DELI_LAST + 1]

UNIVERSES = {"universes": {
    "priced": {"symbols": ["AAA", "CROSS", "DELI", "LATE", "THIN", "NEVER"], "min_price": 5,
               "min_avg_dollar_volume": 1_000_000, "adv_window": 5, "exchanges": ["NYSE"]},
    "stored_priced": {"stored": True, "min_price": 5},
    "nothing": {"symbols": ["AAA", "CROSS"], "min_price": 1e9},
    "quoted": {"symbols": ["AAA"], "exchanges": ["N'YSE"]},  # a quote in a name is data, not SQL
}}
EVERY_BAR = {"kind": "expr", "timeframe": "daily", "when": "close > 0"}
RULES = {"scans": [
    {"name": "priced_bars", "universe": "priced", **EVERY_BAR},
    {"name": "stored_bars", "universe": "stored_priced", **EVERY_BAR},
    {"name": "nobody", "universe": "nothing", **EVERY_BAR},
    {"name": "quoted_bars", "universe": "quoted", **EVERY_BAR},
    {"name": "everyone", **EVERY_BAR},
    # the other kinds' macros join the table too (their SQL must build; few or no signals here)
    {"name": "priced_breakouts", "kind": "breakout", "timeframe": "daily", "universe": "priced"},
    {"name": "priced_crp", "kind": "crp", "timeframe": "daily", "universe": "priced"},
    {"name": "priced_cpr", "kind": "cpr", "timeframe": "daily", "universe": "priced"},
]}
runner = CliRunner()


def _bars(symbol: str, closes: dict[date, float], volume: float = 1_000_000) -> list[dict]:
    return [{"symbol": symbol, "timeframe": "1d", "ts": datetime.combine(d, datetime.min.time()),
             "open": c, "high": c * 1.01, "low": c * 0.99, "close": c, "volume": volume} for d, c in closes.items()]


def market(sessions: list[date]) -> list[dict]:
    idx = {d: i for i, d in enumerate(SESSIONS)}
    return (_bars("AAA", dict.fromkeys(sessions, 10.0))
            + _bars("CROSS", {d: 2.0 if idx[d] < CROSS_AT else 8.0 for d in sessions})
            + _bars("DELI", {d: 20.0 for d in sessions if idx[d] <= DELI_LAST})
            + _bars("LATE", {d: 30.0 for d in sessions if idx[d] >= LATE_AT})
            + _bars("THIN", dict.fromkeys(sessions, 50.0), volume=1_000))


def store(rows: list[dict]) -> None:
    with warehouse.writer(get_settings().warehouse_path) as con:
        ingest(con, [Batch("test:1d", pl.DataFrame(rows, schema=SOURCE_SCHEMA))])


def delist(tmp_path: Path) -> None:
    actions = tmp_path / "actions.csv"
    actions.write_text(f"symbol,ex_date,kind\nDELI,{DELISTED},delisting\n")
    with warehouse.writer(get_settings().warehouse_path) as con:
        corporate_actions.load(con, actions)


@pytest.fixture
def home(trading_home, tmp_path, monkeypatch):
    """A DuckDB file warehouse, the universes file and the rules, under a temp TRADING_HOME."""
    monkeypatch.setenv("TRADING_WAREHOUSE", str(tmp_path / "w.duckdb"))
    (tmp_path / "universes.yaml").write_text(yaml.safe_dump(UNIVERSES))
    monkeypatch.setenv("TRADING_UNIVERSES_FILE", str(tmp_path / "universes.yaml"))
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(RULES))
    get_settings.cache_clear()
    return tmp_path


def build(home: Path, *extra: str) -> None:
    get_settings.cache_clear()
    dbt_runner.build(get_settings().warehouse_path, home / "rules.yaml", extra=extra, target_path=home / "dbt_target")


def signals(scan: str) -> dict[date, set[str]]:
    rows = query(get_settings().warehouse_path,
                 f"select session_date, list(symbol) from marts.signals where scan = '{scan}' group by all").rows()
    return {d: set(s) for d, s in rows}


def members_table() -> pl.DataFrame:
    return query(get_settings().warehouse_path,
                 f"select * exclude (computed_at, source_as_of) from {MEMBERS_TABLE} order by all")


def python_members(name: str, day: date) -> set[str]:
    """The definition computed in Python from the bars (never from the table)."""
    settings = get_settings()
    con = warehouse.connect(settings.warehouse_path, read_only=True)
    try:
        return set(resolve(universe_named(name, settings.universes_file), day, path=settings.universes_file,
                           settings=settings, con=con, use_table=False).symbols)
    finally:
        con.close()


def with_bar(day: date) -> set[str]:
    return {r["symbol"] for r in market(SESSIONS) if r["ts"].date() == day}


def cli_show(name: str, day: date) -> dict:
    res = runner.invoke(app, ["universe", "show", name, "--date", day.isoformat(), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_each_session_has_its_own_members_and_incremental_equals_full(home):
    # the first half, built; then the second half and the delisting, built incrementally
    store(market(SESSIONS[:SPLIT]))
    build(home)
    first = query(get_settings().warehouse_path, f"select max(computed_at) from {MEMBERS_TABLE}").item()
    store(market(SESSIONS[SPLIT:]))
    delist(home)
    build(home)

    by_day = signals("priced_bars")
    # the old gap: CROSS is a member today, but only from the session its close reached $5
    assert min(d for d, s in by_day.items() if "CROSS" in s) == SESSIONS[CROSS_AT]
    assert max(d for d, s in by_day.items() if "DELI" in s) == SESSIONS[DELI_LAST]
    assert min(d for d, s in by_day.items() if "LATE" in s) == SESSIONS[LATE_AT]
    assert not any("THIN" in s for s in by_day.values())  # $50k a day is below the $1M floor
    # every session: the scan covers exactly the members of that session (the Python definition)
    stored = signals("stored_bars")
    for day in SESSIONS:
        assert by_day.get(day, set()) == python_members("priced", day) & with_bar(day), day
        assert stored.get(day, set()) == python_members("stored_priced", day) & with_bar(day), day
    assert signals("nobody") == {}
    everyone = signals("everyone")
    assert set().union(*everyone.values()) == {"AAA", "CROSS", "DELI", "LATE", "THIN"}
    # DELI's delisting stops DELI only (an unqualified column once let it stop every symbol)
    assert everyone[SESSIONS[-1]] == {"AAA", "CROSS", "LATE", "THIN"}

    # the delisted symbol leaves on its ex-date: a row there says why
    deli = query(get_settings().warehouse_path,
                 f"select session_date, is_member, dropped_by from {MEMBERS_TABLE} "
                 "where universe = 'priced' and symbol = 'DELI' order by session_date desc limit 2").rows()
    assert deli == [(DELISTED, False, "delisted"), (SESSIONS[DELI_LAST], True, None)]
    # the incremental build re-judged only what the new data touched
    old = query(get_settings().warehouse_path,
                f"select count(*) filter (where computed_at > '{first}'), count(*) from {MEMBERS_TABLE} "
                f"where session_date < '{SESSIONS[SPLIT]}'").row(0)
    assert old[1] > 0 and old[0] == 0

    incremental, incremental_signals = members_table(), signals("priced_bars")
    build(home, "--full-refresh")
    assert members_table().equals(incremental)
    assert signals("priced_bars") == incremental_signals == by_day


def test_show_answers_from_the_table_the_scans_join(home, monkeypatch):
    store(market(SESSIONS))
    delist(home)
    build(home)
    weekend = SESSIONS[10] + timedelta(days=(5 - SESSIONS[10].weekday()) % 7)  # the Saturday after
    days = [*SESSIONS, weekend, date(2023, 12, 29), SESSIONS[-1] + timedelta(days=30), DELISTED]
    for day in days:
        shown = cli_show("priced", day)
        assert shown["basis"] == MEMBERS_TABLE, day
        table = query(get_settings().warehouse_path,
                      f"select symbol from {MEMBERS_TABLE} where universe = 'priced' and session_date <= '{day}' "
                      "qualify row_number() over (partition by symbol order by session_date desc) = 1 "
                      "and is_member").to_series().to_list()
        assert shown["symbols"] == sorted(table), day
        # and the same members, with the same reasons, as the Python definition
        settings = get_settings()
        con = warehouse.connect(settings.warehouse_path, read_only=True)
        try:
            computed = resolve(universe_named("priced", settings.universes_file), day, path=settings.universes_file,
                               settings=settings, con=con, use_table=False)
        finally:
            con.close()
        assert [(m["symbol"], m["kept"], m["reason"]) for m in shown["members"]] == [
            (m.symbol, m.kept, m.reason) for m in computed.members], day
    assert "DELI" in cli_show("priced", SESSIONS[DELI_LAST])["symbols"]
    assert "DELI" not in cli_show("priced", DELISTED)["symbols"]

    # data newer than the build: the table is stale, so show computes from the bars (and says so)
    late = SESSIONS[-1] + timedelta(days=1)
    store(_bars("AAA", {late: 11.0}))
    stale = resolve_named("priced", get_settings(), late)
    assert stale.basis == "bars" and "AAA" in stale.symbols
    build(home)
    assert resolve_named("priced", get_settings(), late).basis == MEMBERS_TABLE

    # the universe edited after the build: the table holds another spec, show computes; the next
    # build rebuilds that universe whole and the scans follow
    edited = yaml.safe_load((home / "universes.yaml").read_text())
    edited["universes"]["priced"]["min_price"] = 9
    (home / "universes.yaml").write_text(yaml.safe_dump(edited))
    get_settings.cache_clear()
    changed = resolve_named("priced", get_settings(), SESSIONS[-1])
    assert changed.basis == "bars" and "CROSS" not in changed.symbols
    build(home)
    rebuilt = resolve_named("priced", get_settings(), SESSIONS[-1])
    assert rebuilt.basis == MEMBERS_TABLE and rebuilt.symbols == changed.symbols
    assert not any("CROSS" in s for s in signals("priced_bars").values())
    fingerprints = query(get_settings().warehouse_path,
                         f"select count(distinct universe_fingerprint) from {MEMBERS_TABLE} "
                         "where universe = 'priced'").item()
    assert fingerprints == 1  # the old spec's rows were deleted, not left behind


def test_a_universe_with_no_members_gives_no_signals_and_says_why(home):
    store(market(SESSIONS))
    build(home)
    assert signals("nobody") == {}
    assert signals("everyone")  # the same bars do fire where the scan covers every symbol
    res = runner.invoke(app, ["universe", "show", "nothing", "--date", SESSIONS[-1].isoformat()])
    assert res.exit_code == 0, res.output
    assert f"resolves to no symbols on {SESSIONS[-1]}" in res.output
    assert "all 2 candidates dropped (min_price)" in res.output
    assert resolve_named("nothing", get_settings(), SESSIONS[-1]).basis == MEMBERS_TABLE
    assert signals("quoted_bars") == {}
    quoted = resolve_named("quoted", get_settings(), SESSIONS[-1])
    assert quoted.basis == MEMBERS_TABLE and quoted.members[0].reason == "exchange: XNYS is not in [\"N'YSE\"]"

    # a broken universes file: the build stops before dbt, naming scan, universe and field, and
    # the membership and the signals stay as they were
    before = (members_table(), signals("everyone"))
    (home / "universes.yaml").write_text("universes:\n  nothing: {symbols: [AAA], min_price: cheap}\n")
    with pytest.raises(RulesError, match=r"scan 'priced_bars': universe 'priced': .*universe 'nothing': min_price"):
        build(home)
    assert members_table().equals(before[0]) and signals("everyone") == before[1]


def test_dbt_vars_pass_candidates_and_filters_not_members(home):
    """The vars carry the rule, not a session's answer: the same whatever is stored; editing the
    universe changes the scan's fingerprint (its history is recomputed)."""
    rules = load_rules(home / "rules.yaml")
    before = dbt_vars(rules)
    store(market(SESSIONS))
    assert dbt_vars(rules) == before
    spec = {u["name"]: u for u in before["universes"]}
    assert spec["priced"]["candidates"] == {"": ["AAA", "CROSS", "DELI", "LATE", "NEVER", "THIN"]}
    assert spec["priced"]["exchanges"] == ["NYSE", "XNYS"]  # the alias raw.symbols holds, spelled out
    assert spec["stored_priced"]["candidates"] is None  # every stored symbol, found by dbt
    scans = {s["name"]: s for s in before["scans"]}
    assert scans["priced_bars"]["symbols"] == ["AAA", "CROSS", "DELI", "LATE", "NEVER", "THIN"]
    assert scans["stored_bars"]["symbols"] is None and scans["stored_bars"]["universe"] == "stored_priced"
    edited = yaml.safe_load((home / "universes.yaml").read_text())
    edited["universes"]["priced"]["adv_window"] = 10
    (home / "universes.yaml").write_text(yaml.safe_dump(edited))
    after = {s["name"]: s for s in dbt_vars(rules)["scans"]}
    assert after["priced_bars"]["fingerprint"] != scans["priced_bars"]["fingerprint"]
    assert after["stored_bars"]["fingerprint"] == scans["stored_bars"]["fingerprint"]
