"""Indicators equal TA-Lib's, and signals follow DESIGN.md, on real and synthetic bars.

One full ``dbt build`` (models + every schema test) on a warehouse with real GOOG daily
bars (2004-2013), real EURUSD hourly bars, synthetic 1m bars and a few synthetic daily
symbols; each test then checks one thing against an independent computation.
"""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import polars as pl
import pytest
import talib
from dbt_fixtures import (
    INDICATOR_COLUMNS,
    eurusd_hourly,
    goog_daily,
    load,
    query,
    synthetic,
)

SERIES = [("GOOG", "1d"), ("EURUSD", "1h"), ("SYN0000", "1m"), ("SYN0001", "1m"), ("SYN0002", "1d")]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory, dbt):
    path = tmp_path_factory.mktemp("wh_indicators") / "warehouse.duckdb"
    bars = pl.concat(
        [
            goog_daily(),
            eurusd_hourly(),
            synthetic(5, date(2024, 3, 4), date(2024, 3, 15), "1m"),  # enough sessions for intraday CRP at min_score 60
            synthetic(4, date(2021, 1, 1), date(2022, 12, 30), "1d"),
        ]
    )
    load(path, bars)
    dbt(path, "build")
    return path


def expected_talib(bars: pl.DataFrame) -> dict[str, np.ndarray]:
    o, h, lo, c, v = (bars[k].to_numpy().astype(np.float64) for k in ("open", "high", "low", "close", "volume"))
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(c, 20, 2, 2)
    return {
        "sma_20": talib.SMA(c, 20), "sma_50": talib.SMA(c, 50), "sma_200": talib.SMA(c, 200),
        "ema_12": talib.EMA(c, 12), "ema_26": talib.EMA(c, 26), "rsi_14": talib.RSI(c, 14),
        "macd": macd, "macd_signal": signal, "macd_hist": hist,
        "bb_upper": upper, "bb_middle": middle, "bb_lower": lower,
        "atr_14": talib.ATR(h, lo, c, 14), "volume_avg_20": talib.SMA(v, 20),
    }


@pytest.mark.parametrize("symbol,timeframe", SERIES)
def test_every_indicator_matches_talib(warehouse, symbol, timeframe):
    got = query(
        warehouse,
        f"select * from intermediate.int_indicators where symbol = '{symbol}' "
        f"and timeframe = '{timeframe}' order by ts",
    )
    assert got.height > 250, "series too short to exercise sma_200"
    expected = expected_talib(got)
    price_scale = float(np.abs(got["close"].to_numpy()).max())
    for col in INDICATOR_COLUMNS:
        want = expected[col]
        have = got[col].to_numpy().astype(np.float64)  # NULL -> NaN
        assert np.array_equal(np.isnan(have), np.isnan(want)), f"{col}: NULLs differ from TA-Lib NaNs"
        assert (~np.isnan(want)).any(), f"{col}: no values at all"
        scale = {"rsi_14": 100.0, "volume_avg_20": float(got["volume"].max())}.get(col, price_scale)
        diff = np.nanmax(np.abs(have - want))
        assert diff < 1e-9 * scale, f"{col}: max abs diff {diff}"
    # the marts expose the same values
    mart = "indicators_daily" if timeframe == "1d" else "indicators_intraday"
    mart_rows = query(
        warehouse, f"select ts, {', '.join(INDICATOR_COLUMNS)} from marts.{mart} "
        f"where symbol = '{symbol}' order by ts" + ("" if timeframe == "1d" else "")
    )
    if timeframe != "1d":
        mart_rows = query(
            warehouse, f"select ts, {', '.join(INDICATOR_COLUMNS)} from marts.{mart} "
            f"where symbol = '{symbol}' and timeframe = '{timeframe}' order by ts",
        )
    assert mart_rows.equals(got.select("ts", *INDICATOR_COLUMNS))


@pytest.mark.parametrize("symbol,timeframe", SERIES)
def test_cpr_from_previous_session(warehouse, symbol, timeframe):
    got = query(
        warehouse,
        f"select * from intermediate.int_indicators where symbol = '{symbol}' "
        f"and timeframe = '{timeframe}' order by ts",
    )
    sessions = (
        got.group_by("session_date", maintain_order=True)
        .agg(pl.col("high").max(), pl.col("low").min(), pl.col("close").last())
        .with_columns(
            pivot=(pl.col("high") + pl.col("low") + pl.col("close")).shift(1) / 3,
            bc=((pl.col("high") + pl.col("low")) / 2).shift(1),
        )
        .with_columns(tc=2 * pl.col("pivot") - pl.col("bc"))
        .with_columns(width=(pl.col("tc") - pl.col("bc")).abs() / pl.col("pivot") * 100)
    )
    widths = sessions["width"].to_numpy()
    narrow: list[bool | None] = [None] * len(widths)
    for j in range(20, len(widths)):  # session 0 has no previous session
        window = widths[j - 19 : j + 1]
        narrow[j] = bool((window < widths[j]).sum() / 20 < 0.1)
    sessions = sessions.with_columns(pl.Series("narrow", narrow, dtype=pl.Boolean))
    joined = got.join(sessions.select("session_date", "pivot", "bc", "tc", "width", "narrow"), on="session_date")
    for a, b in [("cpr_pivot", "pivot"), ("cpr_bc", "bc"), ("cpr_tc", "tc"), ("cpr_width_pct", "width")]:
        have = joined[a].to_numpy().astype(float)
        want = joined[b].to_numpy().astype(float)
        assert np.array_equal(np.isnan(have), np.isnan(want)), a
        assert np.nanmax(np.abs(have - want)) < 1e-9 * max(1.0, np.nanmax(np.abs(want))), a
    assert joined["cpr_narrow"].to_list() == joined["narrow"].to_list()
    if len(widths) > 40:
        assert joined["cpr_narrow"].sum() > 0


def test_breakouts_follow_the_definition(warehouse):
    """close beyond the previous 20 bars' extreme, volume >= 1.5x its 20-bar average,
    score = distance past the level in ATR(14)s."""
    bars = query(
        warehouse,
        "select * from intermediate.int_indicators where timeframe = '1d' order by symbol, ts",
    )
    w = bars.with_columns(
        prior_high=pl.col("high").shift(1).rolling_max(20).over("symbol"),
        prior_low=pl.col("low").shift(1).rolling_min(20).over("symbol"),
    )
    vol_ok = pl.col("volume") >= 1.5 * pl.col("volume_avg_20")
    up = w.filter((pl.col("close") > pl.col("prior_high")) & vol_ok & (pl.col("atr_14") > 0)).with_columns(
        kind=pl.lit("breakout_up"), score=(pl.col("close") - pl.col("prior_high")) / pl.col("atr_14")
    )
    down = w.filter((pl.col("close") < pl.col("prior_low")) & vol_ok & (pl.col("atr_14") > 0)).with_columns(
        kind=pl.lit("breakout_down"), score=(pl.col("prior_low") - pl.col("close")) / pl.col("atr_14")
    )
    want = pl.concat([up, down]).select("symbol", "ts", "kind", "score").sort("symbol", "ts", "kind")
    have = query(
        warehouse,
        "select symbol, ts, kind, score from marts.signals where scan = 'breakout_daily' "
        "order by symbol, ts, kind",
    )
    assert want.height > 10
    assert have.select("symbol", "ts", "kind").equals(want.select("symbol", "ts", "kind"))
    assert np.allclose(have["score"].to_numpy(), want["score"].to_numpy(), rtol=0, atol=1e-9)
    reason = query(
        warehouse,
        "select reason from marts.signals where scan = 'breakout_daily' and symbol = 'GOOG' "
        "and kind = 'breakout_up' limit 1",
    )["reason"][0]
    assert reason.startswith("close ") and "above 20-bar high" in reason and reason.endswith("x volume")


def crp_scores(bars: pl.DataFrame, tiers=(2.0, 1.5, 1.0)) -> pl.DataFrame:
    """The documented CRP score (rules.yaml), computed here from the bars and TA-Lib's 20-bar
    volume average, independently of the SQL."""
    c, h, lo, o, v = pl.col("close"), pl.col("high"), pl.col("low"), pl.col("open"), pl.col("volume")
    cp = pl.when(h == lo).then(0.5).otherwise((c - lo) / (h - lo))
    r = (h - lo) / c
    chg = (c - o) / o
    range_part = pl.when(r <= 0.03).then(1.0).when(r <= 0.045).then(0.67).otherwise(0.17)
    bars = pl.concat([
        g.with_columns(pl.Series("avg20", talib.SMA(g["volume"].to_numpy().astype("float64"), 20)).fill_nan(None))
        for _, g in bars.sort("symbol", "timeframe", "ts").group_by("symbol", "timeframe", maintain_order=True)
    ])
    rvol = pl.when(pl.col("avg20") > 0).then(v / pl.col("avg20"))
    vol_part = (pl.when(rvol.is_null()).then(0.5).when(rvol >= tiers[0]).then(1.0).when(rvol >= tiers[1]).then(0.75)
                .when(rvol >= tiers[2]).then(0.5).otherwise(0.25))
    long_ = 100 * (0.4 * pl.when(cp >= 0.98).then(1.0).otherwise(0.25) + 0.3 * range_part + 0.2 * vol_part
                   + 0.1 * pl.when(chg > 0.01).then(1.0).when(chg > 0).then(0.5).otherwise(0.2))
    short = 100 * (0.4 * pl.when(cp <= 0.02).then(1.0).otherwise(0.25) + 0.3 * range_part + 0.2 * vol_part
                   + 0.1 * pl.when(chg < -0.01).then(1.0).when(chg < 0).then(0.5).otherwise(0.2))
    return bars.with_columns(score_long=long_, score_short=short).with_columns(
        score=pl.max_horizontal("score_long", "score_short"),
        kind=pl.when(pl.col("score_long") >= pl.col("score_short")).then(pl.lit("crp_long")).otherwise(pl.lit("crp_short")),
    )


def test_crp_daily_follows_the_definition(warehouse):
    bars = query(warehouse, "select * from intermediate.int_indicators where timeframe = '1d'")
    scored = crp_scores(bars).filter((pl.col("close") >= 5) & (pl.col("score") >= 60))
    want = (
        scored.sort(["session_date", "score", "symbol"], descending=[False, True, False])
        .group_by("session_date", maintain_order=True)
        .head(3)
        .select("symbol", "ts", "kind", "score")
        .sort("symbol", "ts")
    )
    have = query(
        warehouse,
        "select symbol, ts, kind, score from marts.signals where scan = 'crp_daily' order by symbol, ts",
    )
    assert want.height > 100
    assert have.select("symbol", "ts", "kind").equals(want.select("symbol", "ts", "kind"))
    assert np.allclose(have["score"].to_numpy(), want["score"].to_numpy(), atol=1e-9)
    per_session = query(
        warehouse, "select max(n_signals) as m from marts.scan_results where scan = 'crp_daily'"
    )["m"][0]
    eligible = scored.group_by("session_date").len()["len"].max()
    assert per_session == min(3, eligible)  # top_n = 3 caps each session


def test_intraday_crp_uses_bars_up_to_the_cutoff(warehouse):
    sig = query(
        warehouse,
        "select s.*, timezone('America/New_York', timezone('UTC', s.ts)) as local_ts "
        "from marts.signals s where scan = 'crp_intraday'",
    )
    assert sig.height > 0
    # the signal sits on the last 1m bar that has ended by 10:30 New York time
    assert all(t.hour == 10 and t.minute == 29 for t in sig["local_ts"])
    assert sig.group_by("session_date", "timeframe").len()["len"].max() <= 3


def test_cpr_narrow_signals_match_the_indicator(warehouse):
    n_ind = query(
        warehouse,
        "select count(*) as n from intermediate.int_indicators where timeframe = '1d' and cpr_narrow",
    )["n"][0]
    sig = query(warehouse, "select * from marts.signals where kind = 'cpr_narrow'")
    assert sig.height == n_ind > 0
    assert set(sig["direction"]) == {"neutral"}
    assert sig["reason"][0].startswith("CPR width ")


def test_marts_have_the_documented_columns_in_clean_schemas(warehouse):
    cols = query(
        warehouse,
        "select table_schema, table_name, column_name from information_schema.columns "
        "where table_schema in ('staging', 'intermediate', 'marts')",
    )
    schemas = set(cols["table_schema"])
    assert schemas == {"staging", "intermediate", "marts"}
    all_schemas = set(query(warehouse, "select schema_name from information_schema.schemata")["schema_name"])
    assert not any(s.startswith("main_") for s in all_schemas)

    def columns(table):
        return set(cols.filter(pl.col("table_name") == table)["column_name"])

    assert set(INDICATOR_COLUMNS) - {"volume_avg_20"} <= columns("indicators_daily")
    assert {"symbol", "ts", "session_date", "open", "high", "low", "close", "volume",
            "cpr_pivot", "cpr_bc", "cpr_tc", "cpr_width_pct", "cpr_narrow"} <= columns("indicators_daily")
    assert {"timeframe"} | set(INDICATOR_COLUMNS) <= columns("indicators_intraday")
    assert {"symbol", "timeframe", "ts", "session_date", "kind", "direction", "score", "reason", "scan"} <= columns("signals")
    assert {"alert_id", "scan", "symbol", "kind", "score", "reason"} <= columns("alerts")
    assert {"scan", "session_date", "n_signals", "symbols"} <= columns("scan_results")
    assert {"symbol", "exchange", "timezone", "first_session", "last_session"} <= columns("dim_symbols")
    alerts = query(warehouse, "select * from marts.alerts")
    assert alerts.height > 0 and alerts["alert_id"].n_unique() == alerts.height


def test_docs_generate(warehouse, dbt, dbt_target):
    dbt(warehouse, "docs", extra=["generate"])
    assert (dbt_target / "catalog.json").exists()


def _crp_case_bars() -> pl.DataFrame:
    """30 quiet sessions, then one last bar per symbol (see the test for what each is)."""
    from trading_pipeline.calendars import session_dates

    days = session_dates("XNYS", date(2024, 1, 2), date(2024, 2, 20))[:31]
    rows = []
    cases = {
        # symbol: (price, usual volume, last bar's volume, last bar closes at the high?)
        "LIQ": (150.0, 20_000_000.0, 50_000_000.0, True),   # a liquid stock: 20M shares a day
        "IDX": (4000.0, 0.0, 0.0, True),                    # an index: no volume reported
        "THIN": (40.0, 1_000_000.0, 300_000.0, True),       # closes at the high on 0.3x volume
        "MID": (60.0, 2_000_000.0, 2_000_000.0, False),     # closes mid-range, average volume
    }
    for sym, (px, vol, last_vol, at_high) in cases.items():
        for i, d in enumerate(days):
            if i < len(days) - 1:
                o, h, lo, c, v = px, px * 1.01, px * 0.99, px, vol
            elif at_high:  # up 1.4% on a 2.5% range, closing at the high
                o, h, lo, c, v = px, px * 1.014, px * 0.989, px * 1.014, last_vol
            else:  # up 0.5%, closing in the middle of a 2.5% range
                o, h, lo, c, v = px, px * 1.0175, px * 0.9925, px * 1.005, last_vol
            rows.append((sym, "1d", datetime(d.year, d.month, d.day), d, o, h, lo, c, v))
    return pl.DataFrame(
        rows, orient="row",
        schema={"symbol": pl.String, "timeframe": pl.String, "ts": pl.Datetime("us"), "session_date": pl.Date,
                "open": pl.Float64, "high": pl.Float64, "low": pl.Float64, "close": pl.Float64, "volume": pl.Float64},
    )


def test_crp_defaults_fire_on_liquid_stocks_and_indices_and_score_relative_volume(tmp_path, dbt):
    """Issue 21.5: the old volume band [50k, 5M] shut out liquid stocks and every index, and the
    absolute volume tiers gave every liquid bar full credit. Now volume counts relative to the
    symbol's own 20-bar average, an index's missing volume is neutral, and min_score filters."""
    path = tmp_path / "w.duckdb"
    bars = _crp_case_bars()
    load(path, bars)
    dbt(path, "build", None, ["--select", "+signals"])
    have = {r[0]: r[1:] for r in query(
        path, "select symbol, kind, score, reason from marts.signals where scan = 'crp_daily'").rows()}
    last = bars["session_date"].max()
    want = crp_scores(bars).filter(pl.col("session_date") == last)
    want = {r[0]: r[1] for r in want.select("symbol", "score").rows()}
    # the reference computation: close 0.4 + range 0.3 + volume (rvol tier) + momentum 0.1
    assert want["LIQ"] == pytest.approx(100.0)    # 50M on a ~21.5M average: rvol >= 2
    assert want["IDX"] == pytest.approx(90.0)     # no volume: the neutral 0.5 of 0.2
    assert want["THIN"] == pytest.approx(85.0)    # 0.3x its average: 0.25 of 0.2
    assert want["MID"] == pytest.approx(55.0)     # mid-range close, average volume
    assert set(have) == {"LIQ", "IDX", "THIN"}    # MID is under min_score 60: no signal
    for sym in have:
        assert have[sym][0] == "crp_long" and have[sym][1] == pytest.approx(want[sym])
    assert "no volume average" in have["IDX"][2] and "x its 20-bar average" in have["LIQ"][2]


def test_scan_results_name_each_symbol_once(warehouse):
    """Issue 20.7: an intraday scan firing on several bars of one symbol listed it once per bar
    (`/scans` showed ["EURUSD","EURUSD","EURUSD"])."""
    rows = query(warehouse, "select scan, timeframe, session_date, n_signals, symbols from marts.scan_results")
    assert rows.height > 0
    repeated = rows.filter(pl.col("n_signals") > pl.col("symbols").str.split(",").list.len())
    assert repeated.height > 0  # sessions with several signals of one symbol exist in the fixture
    for symbols in rows["symbols"]:
        names = symbols.split(",")
        assert len(names) == len(set(names)), symbols
