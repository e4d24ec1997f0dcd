"""Splits and dividends never look like crashes: dbt computes on adjusted bars (issue 16).

SPLT is a stock whose raw bars carry a 2:1 split (prices halve, volume doubles on the
ex-date) and later a dividend; TWIN is the same stock's history as a vendor publishes it
already adjusted. Once the actions are loaded (`corporate_actions.load`, the path of
`trading actions load`), every indicator of SPLT equals TWIN's (1e-9 relative), the two
have the same signals, and the build that re-adjusted the history incrementally equals a
full build. Total-return prices (TRADING_PRICE_ADJUSTMENT=total_return) fold the dividend
in as (1 - amount / previous close), the vendor "Adj Close" rule.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.scans.dbt_fixtures import INDICATOR_COLUMNS, lake, load, query, synthetic
from trading_pipeline.marketdata import corporate_actions
from trading_pipeline.marketdata.warehouse import writer
from trading_pipeline.scans import dbt_runner

RATIO = 2.0
DIVIDEND = 0.75
COMPARED = ["open", "high", "low", "close", "volume", *INDICATOR_COLUMNS,
            "cpr_pivot", "cpr_bc", "cpr_tc", "cpr_width_pct", "cpr_width_rank"]


def base() -> pl.DataFrame:
    """One synthetic daily series (2021-2023): the already-adjusted history."""
    bars = synthetic(1, date(2021, 1, 1), date(2023, 12, 29), "1d")
    return bars.with_columns(symbol=pl.lit("TWIN"))


def dates(bars: pl.DataFrame) -> tuple[date, date]:
    sessions = bars["session_date"].to_list()
    return sessions[300], sessions[520]  # split ex-date, dividend ex-date (both with 200+ bars before)


def raw_split(bars: pl.DataFrame, ex: date) -> pl.DataFrame:
    """SPLT's raw bars: before the ex-date, prices x2 and volume /2 (the pre-split share)."""
    before = pl.col("session_date") < ex
    return bars.with_columns(
        symbol=pl.lit("SPLT"),
        **{c: pl.when(before).then(pl.col(c) * RATIO).otherwise(pl.col(c)) for c in ("open", "high", "low", "close")},
        volume=pl.when(before).then(pl.col("volume") / RATIO).otherwise(pl.col("volume")),
    )


def register(warehouse: str, symbols: list[str]) -> None:
    with writer(warehouse) as con:
        for s in symbols:
            con.execute("INSERT INTO raw.symbols VALUES (?, 'XNYS', 'XNYS', 'America/New_York', 'USD', 'equity', ?, now())",
                        [s, s])


def actions_file(folder: Path, split_ex: date, dividend_ex: date) -> Path:
    path = folder / "actions.csv"
    path.write_text("symbol,ex_date,kind,ratio,amount\n"
                    f"SPLT,{split_ex},split,{RATIO},\n"
                    f"SPLT,{dividend_ex},dividend,,{DIVIDEND}\n")
    return path


def load_actions(warehouse: str, path: Path) -> corporate_actions.LoadResult:
    with writer(warehouse) as con:
        return corporate_actions.load(con, path)


def indicators(warehouse: str, symbol: str) -> pl.DataFrame:
    return query(warehouse, f"select ts, adjustment, {', '.join(COMPARED)} from intermediate.int_indicators "
                            f"where symbol = '{symbol}' and timeframe = '1d' order by ts")


def assert_same_series(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.height == want.height > 500
    assert got["ts"].equals(want["ts"])
    for c in COMPARED:
        a, b = got[c].to_numpy().astype(float), want[c].to_numpy().astype(float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), f"{c}: warm-up differs"
        ok = ~np.isnan(a)
        assert np.allclose(a[ok], b[ok], rtol=1e-9, atol=1e-9), (
            f"{c}: max relative difference {np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-12))}")


def signals(warehouse: str, symbol: str) -> pl.DataFrame:
    return query(warehouse, f"select scan, timeframe, ts, kind, round(score, 9) as score from marts.signals "
                            f"where symbol = '{symbol}' order by all")


@pytest.fixture(scope="module")
def split_built(tmp_path_factory, dbt):
    """Bars first, a build (the split looks like a crash), then the actions and an incremental
    build; beside it a fresh warehouse with bars and actions built once."""
    root = tmp_path_factory.mktemp("adjusted")
    twin = base()
    split_ex, dividend_ex = dates(twin)
    raw = raw_split(twin, split_ex)
    inc = lake(root / "incremental")
    load(inc, pl.concat([twin, raw]))
    register(inc, ["SPLT", "TWIN"])
    dbt(inc, "build")
    before = indicators(inc, "SPLT")
    signals_before = signals(inc, "SPLT")
    result = load_actions(inc, actions_file(root, split_ex, dividend_ex))
    dbt(inc, "build")
    full = lake(root / "full")
    load(full, pl.concat([twin, raw]))
    register(full, ["SPLT", "TWIN"])
    load_actions(full, actions_file(root, split_ex, dividend_ex))
    dbt(full, "build")
    return {"inc": inc, "full": full, "before": before, "signals_before": signals_before, "result": result,
            "split_ex": split_ex, "dividend_ex": dividend_ex, "twin": twin}


def test_unadjusted_split_looks_like_a_crash(split_built):
    """Without the action the raw halving is what the indicators see (what this fixes)."""
    before, ex = split_built["before"], split_built["split_ex"]
    closes = before.filter(pl.col("ts").dt.date().is_between(date(2000, 1, 1), ex))["close"].to_list()
    assert closes[-1] / closes[-2] < 0.6
    result = split_built["result"]
    assert result.loaded == 2 and result.warnings == []  # the bars agree with the stated ratio


def test_split_stock_indicators_equal_the_adjusted_twin(split_built):
    got = indicators(split_built["inc"], "SPLT")
    assert set(got["adjustment"]) == {"split"}
    assert_same_series(got.drop("adjustment"), indicators(split_built["inc"], "TWIN").drop("adjustment"))


def test_no_signal_on_the_split_day_that_the_twin_lacks(split_built):
    inc = split_built["inc"]
    assert signals(inc, "SPLT").equals(signals(inc, "TWIN"))
    ex = datetime.combine(split_built["split_ex"], datetime.min.time())
    crash = split_built["signals_before"].filter((pl.col("ts") == ex) & (pl.col("kind") == "breakout_down"))
    assert crash.height == 1, "the raw split day should have been a breakout_down before adjusting"


def test_re_adjusting_incrementally_equals_a_full_build(split_built):
    for table, order in (("intermediate.int_indicators", "symbol, timeframe, ts"),
                         ("marts.signals", "scan, symbol, timeframe, ts, kind")):
        exclude = "ingested_at, computed_at" if table.startswith("intermediate") else "as_of"
        inc = query(split_built["inc"], f"select * exclude ({exclude}) from {table} order by {order}")
        full = query(split_built["full"], f"select * exclude ({exclude}) from {table} order by {order}")
        assert inc.height > 0 and inc.equals(full), table


def test_marts_say_which_adjustment(split_built):
    rows = query(split_built["inc"], "select distinct adjustment from marts.indicators_daily")
    assert rows["adjustment"].to_list() == ["split"]


def test_a_split_takes_effect_only_once_its_ex_date_is_stored(tmp_path, dbt):
    """An announced split (ex-date after the newest bar) leaves today's prices as traded; the
    ex-date's bars arriving re-adjust the history then."""
    twin = base()
    ex, _ = dates(twin)
    raw = raw_split(twin, ex)
    wh = lake(tmp_path / "wh")
    load(wh, raw.filter(pl.col("session_date") < ex))
    register(wh, ["SPLT"])
    path = tmp_path / "a.csv"
    path.write_text(f"symbol,ex_date,kind,ratio\nSPLT,{ex},split,{RATIO}\n")
    load_actions(wh, path)
    dbt(wh, "build")
    last = indicators(wh, "SPLT")["close"][-1]
    assert last == pytest.approx(raw.filter(pl.col("session_date") < ex)["close"][-1])  # not halved yet
    load(wh, raw.filter(pl.col("session_date") >= ex))
    dbt(wh, "build")
    got = indicators(wh, "SPLT")
    assert got.filter(pl.col("ts").dt.date() < ex)["close"][-1] == pytest.approx(last / RATIO)


def test_total_return_folds_the_dividend_in(tmp_path, dbt):
    twin = base()
    split_ex, dividend_ex = dates(twin)
    prev_close = twin.filter(pl.col("session_date") < dividend_ex)["close"][-1]
    factor = 1.0 - DIVIDEND / prev_close
    before = pl.col("session_date") < dividend_ex
    tr_twin = twin.with_columns(**{c: pl.when(before).then(pl.col(c) * factor).otherwise(pl.col(c))
                                   for c in ("open", "high", "low", "close")})
    wh = lake(tmp_path / "wh")
    load(wh, pl.concat([tr_twin, raw_split(twin, split_ex)]))
    register(wh, ["SPLT", "TWIN"])
    load_actions(wh, actions_file(tmp_path, split_ex, dividend_ex))
    # TRADING_PRICE_ADJUSTMENT=total_return reaches dbt as this var (dbt_runner.vars_json); given
    # here directly, so no setting is changed under the tests that run after this one
    build_vars = {**json.loads(dbt_runner.vars_json()), "price_adjustment": "total_return"}
    dbt(wh, "build", extra=["--vars", json.dumps(build_vars)])
    got = indicators(wh, "SPLT")
    assert set(got["adjustment"]) == {"total_return"}
    assert_same_series(got.drop("adjustment"), indicators(wh, "TWIN").drop("adjustment"))


def test_a_delisted_symbol_keeps_its_history_and_stops_being_scanned(tmp_path, dbt):
    """Signals of a symbol stop at its delisting's ex-date (bars after it, if a feed still sends
    some, are not scanned); those before are unchanged; dim_symbols tells its life."""
    bars = synthetic(2, date(2022, 1, 3), date(2023, 12, 29), "1d")
    symbols = sorted(set(bars["symbol"]))
    gone, renamed = symbols
    sessions = sorted(set(bars.filter(pl.col("symbol") == gone)["session_date"]))
    delisted = sessions[len(sessions) // 2]
    wh = lake(tmp_path / "wh")
    load(wh, bars)
    register(wh, symbols)
    dbt(wh, "build")
    before = signals(wh, gone)
    assert before.filter(pl.col("ts").dt.date() >= delisted).height > 0  # there was something to stop
    path = tmp_path / "a.csv"
    path.write_text(f"symbol,ex_date,kind,ratio,amount,new_symbol\n{gone},{delisted},delisting,,,\n"
                    f"{renamed},{sessions[10]},symbol_change,,,NEWSYM\n")
    load_actions(wh, path)
    dbt(wh, "build")
    after = signals(wh, gone)
    assert after.filter(pl.col("ts").dt.date() >= delisted).height == 0
    assert after.equals(before.filter(pl.col("ts").dt.date() < delisted))
    dim = query(wh, "select symbol, listed_on, delisted_on, active, renamed_to, renamed_from "
                    "from marts.dim_symbols order by symbol")
    rows = {r["symbol"]: r for r in dim.iter_rows(named=True)}
    assert rows[gone]["delisted_on"] == delisted and rows[gone]["active"] is False
    assert rows[gone]["listed_on"] == sessions[0]
    assert rows[renamed]["renamed_to"] == "NEWSYM" and rows[renamed]["active"] is True
    assert query(wh, f"select count(*) as n from raw.bars_daily where symbol = '{gone}'")["n"][0] == len(sessions)
