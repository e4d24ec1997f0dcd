"""Row rules: every bad bar is rejected with its rule and a reason; good ones pass untouched."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from trading_pipeline.marketdata.quality import run_suite, validate

CAL = {"A": "XNYS"}


def bars(rows):
    return pl.DataFrame(
        rows, schema={"symbol": pl.String, "timeframe": pl.String, "ts": pl.Datetime("us"), "open": pl.Float64,
                      "high": pl.Float64, "low": pl.Float64, "close": pl.Float64, "volume": pl.Float64},
        orient="row",
    )


def d(day):
    return datetime(2013, 3, day)


def test_good_bars_pass_sorted_with_session_dates():
    v = validate(bars([("A", "1d", d(5), 10, 11, 9, 10.5, 100), ("A", "1d", d(4), 10, 11, 9, 10.5, 100)]),
                 source="t", calendar_of=CAL)
    assert v.rejected.is_empty()
    assert v.good["ts"].to_list() == [d(4), d(5)]  # out-of-order rows are sorted, not rejected
    assert v.good["session_date"].to_list() == [d(4).date(), d(5).date()]


def test_each_rule_rejects_with_reason():
    rows = [
        ("A", "1d", d(4), float("nan"), 11, 9, 10, 1),   # finite
        ("A", "1d", d(5), 10, float("inf"), 9, 10, 1),   # finite
        ("A", "1d", d(6), -1, 11, 9, 10, 1),             # positive_price
        ("A", "1d", d(7), 0, 11, 9, 10, 1),              # positive_price (zero)
        ("A", "1d", d(8), 10, 9, 11, 10, 1),             # high_low
        ("A", "1d", d(11), 10, 11, 9, 10, -5),           # volume_nonnegative
        ("A", "1d", d(9), 10, 11, 9, 10, 1),             # weekend -> session
        ("A", "1d", datetime(2999, 1, 4), 10, 11, 9, 10, 1),  # future (also no session)
        ("A", "1d", d(12), 10, 10.5, 9, 11, 1),          # high below close
    ]
    v = validate(bars(rows), source="t", calendar_of=CAL)
    assert v.good.is_empty()
    got = dict(zip(v.rejected["row_number"].to_list(), v.rejected["rule"].to_list(), strict=True))
    assert got == {1: "finite", 2: "finite", 3: "positive_price", 4: "positive_price", 5: "high_low",
                   6: "volume_nonnegative", 7: "session", 8: "future", 9: "high_low"}
    reasons = v.rejected["reason"].to_list()
    assert "open is NaN" in reasons[0] and "high 9.0 below low 11.0" in reasons[4]
    assert "high 10.5 below max(open 10.0, close 11.0)" in reasons[8]


def test_future_bar_inside_a_session_is_rejected():
    v = validate(bars([("A", "1d", d(5), 10, 11, 9, 10, 1)]), source="t", calendar_of=CAL, now=datetime(2013, 3, 4, 12))
    assert v.rejected["rule"].to_list() == ["future"]


def test_duplicates_identical_collapse_conflicting_rejected():
    rows = [("A", "1d", d(4), 10, 11, 9, 10, 1), ("A", "1d", d(4), 10, 11, 9, 10, 1),
            ("A", "1d", d(5), 10, 11, 9, 10, 1), ("A", "1d", d(5), 10, 12, 9, 10, 1)]
    v = validate(bars(rows), source="t", calendar_of=CAL)
    assert v.good["ts"].to_list() == [d(4)]
    assert v.rejected["rule"].to_list() == ["duplicate"] * 3
    assert "disagree" in v.rejected.filter(pl.col("ts") == d(5))["reason"][0]


def test_intraday_outside_session_rejected():
    rows = [("A", "1m", datetime(2013, 3, 1, 14, 30), 10, 11, 9, 10, 1),   # 09:30 ET: in
            ("A", "1m", datetime(2013, 3, 1, 21, 0), 10, 11, 9, 10, 1),    # 16:00 ET: closed
            ("A", "1m", datetime(2013, 3, 1, 13, 0), 10, 11, 9, 10, 1)]    # 08:00 ET: pre-market
    v = validate(bars(rows), source="t", calendar_of=CAL)
    assert v.good["ts"].to_list() == [datetime(2013, 3, 1, 14, 30)]
    assert v.rejected["rule"].to_list() == ["session", "session"]


def test_gx_suite_flags_stored_violations():
    good = validate(bars([("A", "1d", d(4), 10, 11, 9, 10, 1), ("A", "1d", d(5), 10, 11, 9, 10, 1)]),
                    source="t", calendar_of=CAL).good
    assert all(r["success"] for r in run_suite(good, CAL))
    broken = pl.concat([good, good.head(1).with_columns(pl.lit(8.0).alias("high"))])
    failed = {r["expectation"] for r in run_suite(broken, CAL) if not r["success"]}
    assert any(f.startswith("expect_compound_columns_to_be_unique") for f in failed)
    assert any(f.startswith("expect_column_pair_values_a_to_be_greater_than_b") for f in failed)


# Symbols on different calendars, interleaved row by row as a stored table can hold them.
MIXED_CAL = {"AAA": "XNYS", "BBB": "XNAS", "CCC": "XLON"}


def _stored(rows):
    df = bars([r[:8] for r in rows])
    return df.with_columns(pl.Series("session_date", [r[8] for r in rows], pl.Date))


def test_in_session_matches_rows_by_key_when_calendars_are_interleaved():
    day = lambda n: datetime(2015, 1, n)  # noqa: E731
    rows = [
        ("AAA", "1d", day(5), 10, 11, 9, 10, 1, day(5).date()),
        ("BBB", "1d", day(6), 10, 11, 9, 10, 1, day(6).date()),
        ("AAA", "1d", day(7), 10, 11, 9, 10, 1, day(7).date()),
        ("CCC", "1d", day(7), 10, 11, 9, 10, 1, day(7).date()),
        ("BBB", "1d", day(8), 10, 11, 9, 10, 1, day(8).date()),
    ]
    results = {r["expectation"]: r for r in run_suite(_stored(rows), MIXED_CAL)}
    in_session = results["expect_column_values_to_be_in_set(in_session)"]
    assert in_session["success"], in_session
    assert all(r["success"] for r in results.values()), [r for r in results.values() if not r["success"]]
    # and a wrong session date on one row is found on that row, not another
    rows[1] = (*rows[1][:8], day(5).date())
    bad = {r["expectation"]: r for r in run_suite(_stored(rows), MIXED_CAL)}
    assert bad["expect_column_values_to_be_in_set(in_session)"]["unexpected_rows"] == [1]


def test_intraday_in_session_with_interleaved_calendars():
    # 15:00 UTC: inside XNYS (14:30-21:00) and XLON (08:00-16:30); 09:00 UTC only XLON
    rows = [
        ("AAA", "1m", datetime(2015, 1, 6, 15, 0), 10, 11, 9, 10, 1, datetime(2015, 1, 6).date()),
        ("CCC", "1m", datetime(2015, 1, 6, 9, 0), 10, 11, 9, 10, 1, datetime(2015, 1, 6).date()),
        ("AAA", "1m", datetime(2015, 1, 6, 15, 1), 10, 11, 9, 10, 1, datetime(2015, 1, 6).date()),
        ("CCC", "1m", datetime(2015, 1, 6, 15, 0), 10, 11, 9, 10, 1, datetime(2015, 1, 6).date()),
    ]
    results = {r["expectation"]: r for r in run_suite(_stored(rows), MIXED_CAL)}
    assert results["expect_column_values_to_be_in_set(in_session)"]["success"]
    v = validate(bars([r[:8] for r in rows]), source="t", calendar_of=MIXED_CAL)
    assert v.rejected.is_empty() and v.good.height == 4


def test_validate_keeps_each_rows_session_when_calendars_are_interleaved():
    # 2015-01-19 (MLK day): NYSE closed, London open. Interleaved with open days around it.
    rows = [
        ("AAA", "1d", datetime(2015, 1, 16), 10, 11, 9, 10, 1),
        ("CCC", "1d", datetime(2015, 1, 19), 10, 11, 9, 10, 1),
        ("AAA", "1d", datetime(2015, 1, 19), 10, 11, 9, 10, 1),
        ("CCC", "1d", datetime(2015, 1, 20), 10, 11, 9, 10, 1),
    ]
    v = validate(bars(rows), source="t", calendar_of=MIXED_CAL)
    assert v.rejected.select("symbol", "rule").rows() == [("AAA", "session")]
    assert v.good.select("symbol", "session_date").rows() == [
        ("AAA", datetime(2015, 1, 16).date()), ("CCC", datetime(2015, 1, 19).date()),
        ("CCC", datetime(2015, 1, 20).date()),
    ]


def test_bar_after_the_calendar_ends_is_future_not_session():
    """Issue 21.4: a 2030 bar (the calendar ends in 2027) was labelled `session`."""
    v = validate(bars([("A", "1d", datetime(2030, 1, 2), 10, 11, 9, 10, 1)]), source="t", calendar_of=CAL,
                 now=datetime(2026, 11, 28))
    assert v.rejected.select("rule").rows() == [("future",)]


def test_suite_matches_session_dates_by_key_with_four_calendars_shuffled():
    """Issue 21.2: stored bars of four calendars (XNYS, XNAS, XLON, 24/7) shuffled row by row,
    daily and intraday: the session dates validate() gave them all pass in_session, and one
    wrong session date is found on its own row, whatever the order."""
    import random

    cal = {"NY1": "XNYS", "NQ1": "XNAS", "LN1": "XLON", "FX1": "24/7", "NY2": "XNYS"}
    daily = [(s, "1d", datetime(2015, 1, day), 10, 11, 9, 10, 1) for s in cal for day in range(12, 24)]
    intraday = [(s, "1m", datetime(2015, 1, 14, h, m), 10, 11, 9, 10, 1)
                for s in cal for h in (9, 15, 16, 20) for m in (0, 31)]
    for rows in (daily, intraday):
        v = validate(bars(rows), source="t", calendar_of=cal)
        stored = v.good.sample(fraction=1.0, shuffle=True, seed=3)
        res = {r["expectation"]: r for r in run_suite(stored, cal)}
        assert res["expect_column_values_to_be_in_set(in_session)"]["success"], rows[0][1]
        assert v.good.height > 0 and v.rejected["rule"].unique().to_list() in ([], ["session"])
        i = random.Random(5).randrange(stored.height)
        wrong = stored.with_columns(
            pl.when(pl.int_range(pl.len()) == i).then(pl.col("session_date") - pl.duration(days=1))
            .otherwise(pl.col("session_date")).alias("session_date"))
        bad = {r["expectation"]: r for r in run_suite(wrong, cal)}
        assert bad["expect_column_values_to_be_in_set(in_session)"]["unexpected_rows"] == [i]
