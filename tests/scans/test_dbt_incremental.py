"""Incremental builds equal a full rebuild; signals are point in time.

Bars arrive in four steps (history; more bars with one bar held back; the held-back bars
arriving late plus new bars; the last session plus corrections of bars in the middle of
history), with an incremental ``dbt run`` after each. A fresh warehouse loaded with the
final bars at once and built once must hold exactly the same rows.
"""

from __future__ import annotations

from datetime import date, datetime

import polars as pl
import pytest

from tests.scans.dbt_fixtures import lake, load, query, synthetic

D1 = datetime(2023, 6, 30)
D2 = datetime(2023, 10, 31)
LAST = datetime(2023, 12, 29)
LATE_DAILY = ("SYN0001", datetime(2023, 8, 1))
LATE_INTRADAY = ("SYN0000", datetime(2024, 3, 6, 15, 0))
CORRECT_DAILY = ("SYN0002", datetime(2023, 9, 15))
CORRECT_INTRADAY = ("SYN0001", datetime(2024, 3, 6, 16, 30))
# 30m bars over 30+ sessions: intraday CRP's relative volume reads the previous 20 sessions;
# a corrected bar inside a 10:30 window (volume x3) changes the next sessions' rvol
CORRECT_30M = ("SYN0001", datetime(2024, 3, 6, 14, 30))


def final_bars() -> pl.DataFrame:
    daily = synthetic(4, date(2021, 1, 1), LAST.date(), "1d")
    intraday = synthetic(2, date(2024, 3, 4), date(2024, 3, 8), "1m")
    half_hour = synthetic(2, date(2024, 1, 16), date(2024, 3, 8), "30m")
    return pl.concat([daily, intraday, half_hour])


def is_bar(key) -> pl.Expr:
    return (pl.col("symbol") == key[0]) & (pl.col("ts") == key[1])


def is_30m_bar(key) -> pl.Expr:
    return is_bar(key) & (pl.col("timeframe") == "30m")


def corrected(bars: pl.DataFrame) -> pl.DataFrame:
    """The same bars with two of them corrected (close +4%, high widened to match)."""
    fix = is_bar(CORRECT_DAILY) | is_bar(CORRECT_INTRADAY) | is_30m_bar(CORRECT_30M)
    return bars.with_columns(
        close=pl.when(fix).then(pl.col("close") * 1.04).otherwise(pl.col("close")),
        volume=pl.when(is_30m_bar(CORRECT_30M)).then(pl.col("volume") * 3).otherwise(pl.col("volume")),
    ).with_columns(high=pl.max_horizontal("high", "close"))


def steps(bars: pl.DataFrame) -> list[pl.DataFrame]:
    daily = pl.col("timeframe") == "1d"
    sess = pl.col("session_date")
    late = is_bar(LATE_DAILY) | is_bar(LATE_INTRADAY)
    step1 = bars.filter((daily & (pl.col("ts") <= D1)) | (~daily & (sess <= date(2024, 3, 5))))
    step2 = bars.filter(
        ((daily & (pl.col("ts") > D1) & (pl.col("ts") <= D2)) | (~daily & (sess == date(2024, 3, 6))))
        & ~late
    )
    step3 = bars.filter(
        (daily & (pl.col("ts") > D2) & (pl.col("ts") < LAST))
        | (~daily & (sess == date(2024, 3, 7)))
        | late
    )
    step4 = pl.concat(
        [
            bars.filter((daily & (pl.col("ts") == LAST)) | (~daily & (sess == date(2024, 3, 8)))),
            corrected(bars).filter(is_bar(CORRECT_DAILY) | is_bar(CORRECT_INTRADAY) | is_30m_bar(CORRECT_30M)),
        ]
    )
    return [step1, step2, step3, step4]


TABLES = {
    "intermediate.int_indicators": ("ingested_at, computed_at", "symbol, timeframe, ts"),
    "marts.signals": ("as_of", "scan, symbol, timeframe, ts, kind"),
    "marts.scan_results": ("as_of", "scan, timeframe, session_date"),
    "marts.alerts": ("as_of", "alert_id"),
    "marts.indicators_daily": ("computed_at", "symbol, ts"),
}


def snapshot(warehouse, table: str) -> pl.DataFrame:
    exclude, order = TABLES[table]
    return query(warehouse, f"select * exclude ({exclude}) from {table} order by {order}")


@pytest.fixture(scope="module")
def built(tmp_path_factory, dbt):
    root = tmp_path_factory.mktemp("wh_incremental")
    bars = final_bars()
    inc = lake(root / "incremental")  # DuckLakes, the default warehouse
    after_step1 = None
    rewritten = []
    for i, step in enumerate(steps(bars)):
        load(inc, step)
        dbt(inc, "build" if i == 3 else "run")
        if i == 0:
            after_step1 = snapshot(inc, "marts.signals")
        rewritten.append(
            query(
                inc,
                "select symbol, timeframe, min(ts) as first_ts, count(*) as n "
                "from intermediate.int_indicators "
                "where computed_at = (select max(computed_at) from intermediate.int_indicators) "
                "group by all order by all",
            )
        )
    full = lake(root / "full")
    load(full, corrected(bars))
    dbt(full, "run")
    return {"inc": inc, "full": full, "after_step1": after_step1, "rewritten": rewritten, "bars": bars}


@pytest.mark.parametrize("table", list(TABLES))
def test_incremental_equals_full_rebuild(built, table):
    inc, full = snapshot(built["inc"], table), snapshot(built["full"], table)
    assert full.height > 0
    assert inc.equals(full), f"{table}: incremental differs from full rebuild"


def test_corrections_reached_the_indicators(built):
    row = query(
        built["inc"],
        f"select close from intermediate.int_indicators where symbol = '{CORRECT_DAILY[0]}' "
        f"and ts = '{CORRECT_DAILY[1]}'",
    )
    orig = built["bars"].filter(is_bar(CORRECT_DAILY))["close"][0]
    assert row["close"][0] == pytest.approx(orig * 1.04)


def test_only_changed_rows_are_recomputed(built):
    """Step 3: new bars everywhere, plus one late bar in the middle of two series."""
    got = built["rewritten"][2]
    by_series = {(r["symbol"], r["timeframe"]): r for r in got.iter_rows(named=True)}
    assert by_series[("SYN0001", "1d")]["first_ts"] == LATE_DAILY[1]
    assert by_series[("SYN0000", "1d")]["first_ts"] > D2
    assert by_series[("SYN0000", "1m")]["first_ts"] == LATE_INTRADAY[1]
    assert by_series[("SYN0001", "1m")]["first_ts"].date() == date(2024, 3, 7)
    total = query(built["inc"], "select count(*) as n from intermediate.int_indicators")["n"][0]
    assert got["n"].sum() < total / 3
    # step 4: the last session, and everything after the two corrected bars
    last = {(r["symbol"], r["timeframe"]): r for r in built["rewritten"][3].iter_rows(named=True)}
    assert last[("SYN0002", "1d")]["first_ts"] == CORRECT_DAILY[1]
    assert last[("SYN0000", "1d")]["first_ts"] == LAST


def test_signals_are_point_in_time(built):
    """Signals up to D1 built with bars up to D1 equal those of the full final build."""
    early = built["after_step1"]
    final = snapshot(built["full"], "marts.signals").filter(
        ((pl.col("timeframe") == "1d") & (pl.col("ts") <= D1))
        | ((pl.col("timeframe") != "1d") & (pl.col("session_date") <= date(2024, 3, 5)))
    )
    assert early.height > 50
    assert set(early["kind"]) >= {"breakout_up", "crp_long", "cpr_narrow"}
    assert early.drop("rule_fingerprint").equals(final.drop("rule_fingerprint"))


def test_intraday_crp_relative_volume_reads_previous_sessions(built):
    """With 20+ sessions of 30m bars, intraday CRP scores the 10:30 window's volume against
    the same window in the previous 20 sessions (so the incremental == full check above
    covers the trailing window across builds and the corrected bar)."""
    rows = query(built["full"], "select reason from marts.signals where scan = 'crp_intraday' and timeframe = '30m'")
    assert any("x its previous 20-session average" in r for r in rows["reason"]), rows
