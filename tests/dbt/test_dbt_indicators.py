"""Indicators equal TA-Lib's, and signals follow DESIGN.md, on real and synthetic bars.

One full ``dbt build`` (models + every schema test) on a warehouse with real GOOG daily
bars (2004-2013), real EURUSD hourly bars, synthetic 1m bars and a few synthetic daily
symbols; each test then checks one thing against an independent computation.
"""

from __future__ import annotations

from datetime import date

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
            synthetic(2, date(2024, 3, 4), date(2024, 3, 7), "1m"),
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


def crp_scores(bars: pl.DataFrame) -> pl.DataFrame:
    c, h, lo, o, v = pl.col("close"), pl.col("high"), pl.col("low"), pl.col("open"), pl.col("volume")
    cp = pl.when(h == lo).then(0.5).otherwise((c - lo) / (h - lo))
    r = (h - lo) / c
    chg = (c - o) / o
    range_part = pl.when(r <= 0.03).then(1.0).when(r <= 0.045).then(0.67).otherwise(0.17)
    vol_part = pl.when(v > 75_000).then(1.0).when(v > 50_000).then(0.75).when(v > 25_000).then(0.5).otherwise(0.25)
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
    scored = crp_scores(
        bars.filter(pl.col("close").is_between(50, 2000) & pl.col("volume").is_between(50_000, 5_000_000))
    ).filter(pl.col("score") >= 30)
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
    assert per_session == 3


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
