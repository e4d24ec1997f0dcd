"""Corporate actions from more sources: read back from a vendor's adjusted closes (series built
from raw closes and the vendor's back-adjustment rule, so the actions are known), and fetched
from Alpaca's corporate actions API through the real alpaca-py client and the local stub. Both
load through ``corporate_actions.load_frame`` into a real warehouse, idempotently, and refuse
bad input whole; `trading actions derive` / `fetch` are run through a Typer app built here
around ``actions_sources_cmd.register``."""

# ruff: noqa: F811  (fixtures are imported from tests.stubs.alpaca_fixtures)

from __future__ import annotations

import json
import random
from datetime import date

import polars as pl
import pytest
from typer.testing import CliRunner

from tests.stubs.alpaca_fixtures import STUB_KEY, STUB_SECRET, alpaca_stub  # noqa: F401
from tests.stubs.alpaca_stub import AlpacaStub
from trading_pipeline.cli.main import app as trading_app
from trading_pipeline.marketdata import warehouse
from trading_pipeline.marketdata.actions_sources import (
    ADJ_CLOSE_NAMES,
    ActionsSourceError,
    derive_file,
    derive_from_adjusted,
    fetch_alpaca,
    split_ratio,
)
from trading_pipeline.marketdata.calendars import session_dates
from trading_pipeline.marketdata.corporate_actions import stored_actions
from trading_pipeline.settings import Settings, get_settings

runner = CliRunner()
DAYS = session_dates("XNYS", date(2024, 1, 2), date(2024, 3, 28))  # 61 sessions
SPLIT, REVERSE, DIVIDEND = 15, 35, 50  # session indexes of ACME's ex-dates
ACME_EVENTS = {SPLIT: ("split", 2.0), REVERSE: ("split", 0.1), DIVIDEND: ("dividend", 0.82)}
BETA_EVENTS = {20: ("dividend", 0.37)}


def raw_closes(events: dict[int, tuple[str, float]], base: float) -> list[float]:
    """A wandering raw close that moves as the actions move it on their ex-dates."""
    closes, px = [], base
    for i in range(len(DAYS)):
        kind, value = events.get(i, ("", 0.0))
        if kind == "split":
            px /= value
        elif kind == "dividend":
            px -= value
        px = round(px * (1 + 0.004 * ((i * 7) % 5 - 2)), 2)
        closes.append(px)
    return closes


def vendor_adjusted(closes: list[float], events: dict[int, tuple[str, float]]) -> list[float]:
    """Back-adjusted closes as vendors make them: the factor is 1 after the last action; going
    back over an ex-date t it is multiplied by 1/ratio (a split) or 1 - D/close_{t-1} (a dividend)."""
    factor, out = 1.0, [0.0] * len(closes)
    for t in range(len(closes) - 1, -1, -1):
        out[t] = round(closes[t] * factor, 6)
        kind, value = events.get(t, ("", 0.0))
        if kind == "split":
            factor /= value
        elif kind == "dividend":
            factor *= 1 - value / closes[t - 1]
    return out


def bar_rows(symbol: str, events: dict, base: float, adj: list[float] | None = None) -> list[dict]:
    closes = raw_closes(events, base)
    adj = adj or vendor_adjusted(closes, events)
    return [{"Symbol": symbol, "Date": d.isoformat(), "Open": c, "High": round(c * 1.01, 2), "Low": round(c * 0.99, 2),
             "Close": c, "Adj Close": a, "Volume": 1_000_000} for d, c, a in zip(DAYS, closes, adj, strict=True)]


def write_bars(path, rows: list[dict], adj_name: str = "Adj Close") -> None:
    df = pl.DataFrame(rows).rename({"Adj Close": adj_name})
    if path.suffix == ".parquet":
        df.write_parquet(path)
    else:
        df.write_csv(path)


def expected_acme(source: str) -> list[tuple]:
    return [("ACME", DAYS[SPLIT], "split", 2.0, None, source), ("ACME", DAYS[REVERSE], "split", 0.1, None, source),
            ("ACME", DAYS[DIVIDEND], "dividend", None, 0.82, source)]


def summary(actions: pl.DataFrame) -> list[tuple]:
    return list(actions.select("symbol", "ex_date", "kind", "ratio", "amount", "source").iter_rows())


# ---------------------------------------------------------------- derivation
def test_split_ratios_are_the_simplest_fraction_within_one_percent():
    assert [split_ratio(m) for m in (2.0, 0.1, 1.5, 1 / 3, 0.1004, 3.02)] == [2.0, 0.1, 1.5, 1 / 3, 0.1, 3.0]
    assert [split_ratio(m) for m in (1.15, 0.85, 25.0, 0.03)] == [None] * 4  # too small a move; no p, q <= 20


@pytest.mark.parametrize(("name", "adj_name"), [("bars.csv", "Adj Close"), ("bars.csv", "adjclose"),
                                                ("bars.parquet", "adjusted_close"), ("bars.csv", "ADJ_CLOSE")])
def test_a_split_a_reverse_split_and_a_dividend_are_read_back(tmp_path, name, adj_name):
    f = tmp_path / name
    write_bars(f, bar_rows("ACME", ACME_EVENTS, 120.0) + bar_rows("BETA", BETA_EVENTS, 40.0), adj_name)
    derived = derive_file(f)
    source = f"adj_close:{name}"
    assert derived.source == source
    assert summary(derived.actions) == [*expected_acme(source), ("BETA", DAYS[20], "dividend", None, 0.37, source)]
    assert derived.notes == []
    assert set(ADJ_CLOSE_NAMES) == {"adj_close", "adjclose", "adjusted_close"}


def test_the_dividend_amount_inverts_the_vendor_factor():
    closes = [50.0, 50.0, 49.2, 49.2]
    factor = 1 - 0.8 / 50.0  # a 0.80 dividend on the third session
    adj = [50.0 * factor, 50.0 * factor, 49.2, 49.2]
    bars = pl.DataFrame({"symbol": ["X"] * 4, "session_date": DAYS[:4], "close": closes, "adj_close": adj})
    actions, notes = derive_from_adjusted(bars)
    assert summary(actions) == [("X", DAYS[2], "dividend", None, 0.8, "adj_close")] and notes == []


def test_a_noisy_adjusted_series_gives_notes_not_actions():
    rng = random.Random(7)
    closes = raw_closes({}, 80.0)
    # a vendor's jittered adjusted close: off by 0.2% to 0.6% each day, up and down in turn
    adj = [c * 0.95 * (1 + (1 if i % 2 else -1) * rng.uniform(0.002, 0.006)) for i, c in enumerate(closes)]
    bars = pl.DataFrame({"symbol": ["NOISY"] * len(DAYS), "session_date": DAYS, "close": closes, "adj_close": adj})
    actions, notes = derive_from_adjusted(bars)
    assert actions.is_empty()
    assert len(notes) == len(DAYS) - 1  # every session's move is named
    assert notes[0].startswith(f"NOISY {DAYS[1]}: m = ")
    assert any("looks like a dividend" in n for n in notes) and any("no reverse split" in n for n in notes)


def test_a_fall_that_is_no_reverse_split_is_a_note():
    bars = pl.DataFrame({"symbol": ["Y"] * 3, "session_date": DAYS[:3], "close": [10.0, 10.0, 10.0],
                         "adj_close": [10.0, 10.0, 9.5]})  # m = 0.95: no vendor rule makes that
    actions, notes = derive_from_adjusted(bars)
    assert actions.is_empty()
    assert notes == [f"Y {DAYS[2]}: m = 0.950000 is a fall (m < 1) that is no reverse split: not stored"]


@pytest.mark.parametrize(("text", "said"), [
    ("Date,Open,High,Low,Close,Volume\n2024-01-02,1,1,1,1,10\n2024-01-03,1,1,1,1,10\n", "no adjusted close column"),
    ("Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,1,1,1,1,0.9,10\n2024-01-03,1,1,1,1,n/a,10\n",
     "row 3 (X 2024-01-03): Adj Close 'n/a' is not a price > 0"),
    ("Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,1,1,1,1,0.9,10\n2024-01-02,1,1,1,1,0.9,10\n",
     "row 3: X 2024-01-02 appears more than once"),
    ("Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02 09:30,1,1,1,1,1,10\n2024-01-02 09:35,1,1,1,1,1,10\n",
     "the bars are 5m, not daily"),
    ("Date,Close,Adj Close\n2024-01-02,1,1\n", "missing column(s): open, high, low, volume"),
])
def test_a_bad_bar_file_is_refused_with_what_to_fix(tmp_path, text, said):
    f = tmp_path / "X.csv"
    f.write_text(text)
    with pytest.raises(ValueError) as err:
        derive_file(f)
    assert said in str(err.value)


# ---------------------------------------------------------------- loading, through the CLI
def actions_cli(*args: str, code: int = 0):
    """`trading actions ...` through the real CLI app (a stored load is a Dagster run)."""
    from trading_pipeline.cli.main import app

    res = runner.invoke(app, ["actions", *args])
    assert res.exit_code == code, res.output
    return json.loads(res.stdout) if "--json" in args and code == 0 else res.output


def stored() -> pl.DataFrame:
    con = warehouse.connect(get_settings().warehouse_path, read_only=True)
    try:
        return stored_actions(con)
    finally:
        con.close()


@pytest.fixture
def acme_home(trading_home, tmp_path):
    f = tmp_path / "ACME.csv"
    write_bars(f, bar_rows("ACME", ACME_EVENTS, 120.0))
    res = runner.invoke(trading_app, ["ingest", str(f), "--json"])
    assert res.exit_code == 0, res.output
    return f


def test_derived_actions_load_once_through_the_file_checks(acme_home):
    dry = actions_cli("derive", str(acme_home), "--dry-run", "--json")
    assert (dry["dry_run"], dry["loaded"], dry["unchanged"], dry["warnings"], dry["notes"]) == (True, 3, 0, [], [])
    assert [(a["ex_date"], a["kind"]) for a in dry["actions"]] == [
        (DAYS[SPLIT].isoformat(), "split"), (DAYS[REVERSE].isoformat(), "split"), (DAYS[DIVIDEND].isoformat(), "dividend")]
    assert stored().is_empty()  # the dry run stored nothing
    out = actions_cli("derive", str(acme_home), "--json")
    assert (out["loaded"], out["unchanged"], out["warnings"]) == (3, 0, [])  # the bars agree with both splits
    assert "run_id" not in dry and out["run_id"]  # the store is a Dagster run (load_corporate_actions)
    assert [(a["ex_date"], a["kind"]) for a in out["actions"]] == [(a["ex_date"], a["kind"]) for a in dry["actions"]]
    assert summary(stored()) == expected_acme("adj_close:ACME.csv")
    again = actions_cli("derive", str(acme_home), "--json")
    assert (again["loaded"], again["unchanged"]) == (0, 3)  # idempotent
    assert stored().height == 3
    assert "loaded 0 action(s); 3 already stored" in actions_cli("derive", str(acme_home))


def test_a_noisy_file_stores_nothing_and_says_why(acme_home, tmp_path):
    f = tmp_path / "ACME_noisy.csv"
    closes = raw_closes(ACME_EVENTS, 120.0)
    write_bars(f, bar_rows("ACME", ACME_EVENTS, 120.0, adj=[c * (1.003 if i % 2 else 0.997) for i, c in enumerate(closes)]))
    out = actions_cli("derive", str(f), "--json")
    assert (out["loaded"], out["unchanged"], out["actions"]) == (0, 0, [])
    # adj_close is the raw close jittered (the splits are in both columns): k swings every session
    assert len(out["notes"]) == len(DAYS) - 1 and all(n.startswith("ACME 2024-") for n in out["notes"])
    assert stored().is_empty()
    assert "note: ACME" in actions_cli("derive", str(f))


def test_a_derived_symbol_without_bars_is_refused_whole(acme_home, tmp_path):
    f = tmp_path / "two.csv"
    write_bars(f, bar_rows("ACME", ACME_EVENTS, 120.0) + bar_rows("NOBARS", BETA_EVENTS, 40.0))
    out = actions_cli("derive", str(f), code=2).replace("\n", " ")
    assert "actions derived from two.csv: 1 problem(s), nothing loaded" in out
    assert "line 4: unknown symbol NOBARS (no bars loaded for it: load its bars first)" in out
    assert stored().is_empty()


def test_derive_needs_a_file_and_a_warehouse(trading_home, tmp_path):
    assert "no file" in actions_cli("derive", str(tmp_path / "missing.csv"), code=2)
    f = tmp_path / "ACME.csv"
    write_bars(f, bar_rows("ACME", ACME_EVENTS, 120.0))
    assert "no warehouse" in actions_cli("derive", str(f), code=2).replace("\n", " ")


# ---------------------------------------------------------------- Alpaca
ALPACA = {
    "forward_splits": [{"symbol": "ACME", "new_rate": 2, "old_rate": 1, "ex_date": DAYS[SPLIT].isoformat()}],
    "reverse_splits": [{"symbol": "ACME", "new_rate": 1, "old_rate": 10, "ex_date": DAYS[REVERSE].isoformat()}],
    "cash_dividends": [{"symbol": "ACME", "rate": 0.82, "ex_date": DAYS[DIVIDEND].isoformat(),
                        "payable_date": "2024-04-15"},
                       {"symbol": "OTHER", "rate": 1.0, "ex_date": DAYS[3].isoformat()}],
    "name_changes": [{"old_symbol": "ACME", "new_symbol": "ACMX", "process_date": DAYS[-1].isoformat()}],
    "worthless_removals": [{"symbol": "ACME", "process_date": "2024-06-03"}],
}


def settings_for(stub: AlpacaStub, key: str = STUB_KEY) -> Settings:
    return Settings(alpaca_api_key=key, alpaca_secret_key=STUB_SECRET, alpaca_data_url_override=stub.url)


def test_alpaca_actions_map_to_ours_across_pages(alpaca_stub):
    alpaca_stub.set_corporate_actions(ALPACA)
    alpaca_stub.page_size = 2  # five of ACME's actions: three pages
    got = fetch_alpaca(settings_for(alpaca_stub), ["acme"], DAYS[0], date(2024, 12, 31))
    assert list(got.select("symbol", "ex_date", "kind", "ratio", "amount", "new_symbol", "pay_date", "source").iter_rows()) == [
        ("ACME", DAYS[SPLIT], "split", 2.0, None, None, None, "alpaca"),
        ("ACME", DAYS[REVERSE], "split", 0.1, None, None, None, "alpaca"),
        ("ACME", DAYS[DIVIDEND], "dividend", None, 0.82, None, date(2024, 4, 15), "alpaca"),
        ("ACME", DAYS[-1], "symbol_change", None, None, "ACMX", None, "alpaca"),
        ("ACME", date(2024, 6, 3), "delisting", None, None, None, None, "alpaca"),
    ]
    assert [p for m, p in alpaca_stub.requests] == ["/v1/corporate-actions"] * 3
    # the range is inclusive, on the ex-date (the process date without one)
    assert fetch_alpaca(settings_for(alpaca_stub), ["ACME"], DAYS[SPLIT], DAYS[SPLIT])["kind"].to_list() == ["split"]


@pytest.mark.parametrize(("actions", "complete", "said"), [
    ({"forward_splits": [{"symbol": "ACME", "old_rate": 1, "ex_date": "2024-01-22"}]}, True,
     "forward_splits[1] (ACME): new_rate Field required"),
    ({"cash_dividends": [{"symbol": "ACME", "rate": 0.5, "ex_date": "2024-01-22"}]}, False,
     "cash_dividends[0] (ACME): id Field required, cusip Field required"),
    ({"reverse_splits": [{"symbol": "ACME", "new_rate": 0, "old_rate": 10, "ex_date": "2024-01-22"}]}, True,
     "reverse_splits[1] (ACME): split rates must be > 0, got new_rate 0.0, old_rate 10.0"),
    ({"forward_splits": [{"symbol": "ACME", "new_rate": 2, "old_rate": 0, "ex_date": "2024-01-22"}]}, True,
     "split rates must be > 0"),
    ({"cash_dividends": [{"symbol": "ACME", "rate": -1, "ex_date": "2024-01-22"}]}, True,
     "cash_dividends[1] (ACME): dividend rate must be > 0, got -1.0"),
])
def test_a_bad_alpaca_item_refuses_the_whole_answer(alpaca_stub, actions, complete, said):
    alpaca_stub.set_corporate_actions({**ALPACA, **{k: ALPACA.get(k, []) + v for k, v in actions.items()}}
                                      if complete else actions, complete=complete)
    with pytest.raises(ActionsSourceError) as err:
        fetch_alpaca(settings_for(alpaca_stub), ["ACME"], DAYS[0], date(2024, 12, 31))
    assert said in str(err.value) and "the answer is refused whole" in str(err.value)


def test_alpaca_http_errors_say_what_to_check(alpaca_stub):
    alpaca_stub.set_corporate_actions(ALPACA)
    alpaca_stub.fail_next(status=500)
    with pytest.raises(ActionsSourceError, match="HTTP 500.*TRADING_ALPACA_DATA_URL_OVERRIDE"):
        fetch_alpaca(settings_for(alpaca_stub), ["ACME"], DAYS[0], DAYS[-1])
    with pytest.raises(ActionsSourceError, match="HTTP 401.*TRADING_ALPACA_API_KEY"):
        fetch_alpaca(settings_for(alpaca_stub, key="wrong"), ["ACME"], DAYS[0], DAYS[-1])
    alpaca_stub.malformed_next(body='{"corporate_actions": {"forward_splits": [{"symbol": "ACME"')
    with pytest.raises(ActionsSourceError, match="malformed answer .JSONDecodeError"):
        fetch_alpaca(settings_for(alpaca_stub), ["ACME"], DAYS[0], DAYS[-1])
    alpaca_stub.malformed_next(body='{"something": {}}')
    with pytest.raises(ActionsSourceError, match="malformed answer .ValueError: The data in response does not match"):
        fetch_alpaca(settings_for(alpaca_stub), ["ACME"], DAYS[0], DAYS[-1])
    alpaca_stub.malformed_next(body='{"bars": {"ACME": [{"t": "2024-01-02T05:00:00Z"}]}}')
    with pytest.raises(ActionsSourceError, match="unknown corporate action type 'ACME'"):
        fetch_alpaca(settings_for(alpaca_stub), ["ACME"], DAYS[0], DAYS[-1])
    with pytest.raises(ActionsSourceError, match="no API keys"):
        fetch_alpaca(Settings(alpaca_api_key=None, alpaca_secret_key=None), ["ACME"], DAYS[0], DAYS[-1])
    with pytest.raises(ActionsSourceError, match="end 2024-01-01 is before start"):
        fetch_alpaca(settings_for(alpaca_stub), ["ACME"], DAYS[0], date(2024, 1, 1))
    assert len(fetch_alpaca(settings_for(alpaca_stub), ["ACME"], DAYS[0], DAYS[-1])) == 4  # and then it works


@pytest.fixture
def alpaca_env(acme_home, alpaca_stub, monkeypatch):
    monkeypatch.setenv("TRADING_ALPACA_API_KEY", STUB_KEY)
    monkeypatch.setenv("TRADING_ALPACA_SECRET_KEY", STUB_SECRET)
    monkeypatch.setenv("TRADING_ALPACA_DATA_URL_OVERRIDE", alpaca_stub.url)
    get_settings.cache_clear()
    return alpaca_stub


def test_fetched_actions_load_once_then_meet_the_derived_ones(alpaca_env, acme_home):
    stub = alpaca_env
    stub.set_corporate_actions(ALPACA)
    span = ("--start", DAYS[0].isoformat(), "--end", DAYS[-1].isoformat())
    refused = actions_cli("fetch", "--symbols", "ACME,OTHER", *span, "--dry-run", code=2).replace("\n", " ")
    assert "unknown symbol OTHER (no bars loaded for it: load its bars first)" in refused  # refused whole
    assert stored().is_empty()
    dry = actions_cli("fetch", "--symbols", "ACME", *span, "--dry-run", "--json")
    assert (dry["loaded"], len(dry["actions"])) == (4, 4) and stored().is_empty()
    out = actions_cli("fetch", "--symbols", "ACME", *span, "--json")
    assert (out["loaded"], out["unchanged"], out["warnings"]) == (4, 0, [])
    assert [(a["kind"], a["source"]) for a in out["actions"]] == [
        ("split", "alpaca"), ("split", "alpaca"), ("dividend", "alpaca"), ("symbol_change", "alpaca")]
    assert (actions_cli("fetch", "--symbols", "ACME", *span, "--json")["loaded"], stored().height) == (0, 4)
    # the adjusted closes give the same splits; their dividend has no pay date, Alpaca's has one:
    # the same key with other values, refused as for a file (delete the stored one first)
    said = actions_cli("derive", str(acme_home), code=2).replace("\n", " ")
    assert (f"dividend of ACME on {DAYS[DIVIDEND]} is stored with other values (amount=0.82, pay_date=2024-04-15; "
            "the file: amount=0.82)") in said
    assert "split of" not in said and stored().height == 4


def test_a_fetched_answer_that_contradicts_the_store_stores_nothing(alpaca_env, acme_home):
    actions_cli("derive", str(acme_home), "--json")  # 2:1 on DAYS[SPLIT], from the adjusted closes
    alpaca_env.set_corporate_actions({**ALPACA, "forward_splits": [
        {"symbol": "ACME", "new_rate": 3, "old_rate": 1, "ex_date": DAYS[SPLIT].isoformat()}], "cash_dividends": []})
    out = actions_cli("fetch", "--symbols", "ACME", "--start", DAYS[0].isoformat(), "--end", DAYS[-1].isoformat(),
                      code=2).replace("\n", " ")
    assert f"split of ACME on {DAYS[SPLIT]} is stored with other values (ratio=2.0; the file: ratio=3.0)" in out
    assert "nothing was stored" in out
    assert summary(stored()) == expected_acme("adj_close:ACME.csv")  # the name change was not stored either


def test_fetch_refuses_bad_dates_and_failed_requests(alpaca_env):
    assert "--start '2024-13-01' is not a date" in actions_cli(
        "fetch", "--symbols", "ACME", "--start", "2024-13-01", "--end", "2024-12-31", code=2).replace("\n", " ")
    alpaca_env.fail_next(status=500)
    out = actions_cli("fetch", "--symbols", "ACME", "--start", "2024-01-01", "--end", "2024-12-31", code=2)
    assert "HTTP 500" in out.replace("\n", " ") and stored().is_empty()
