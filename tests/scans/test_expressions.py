"""Expression scans (rules.yaml ``kind: expr``): the parser's errors with their columns, the
compiled SQL run by DuckDB against the same condition written in polars, and a real dbt build
whose expr signals equal a direct computation on int_indicators, incrementally and in full."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
import yaml

from tests.scans.dbt_fixtures import lake, load, query, synthetic
from trading_pipeline.scans.expressions import ExprError, compile_scan, parse, select_sql
from trading_pipeline.scans.rules import RulesError, dbt_vars, load_rules
from trading_pipeline.settings import PROJECT_DIR

RULES = PROJECT_DIR / "rules.yaml"
SERIES = ["symbol", "timeframe"]


# --- errors: field, column, message -------------------------------------------------------

@pytest.mark.parametrize(
    "when,score,message",
    [
        ("close > rsi", None, "when: col 9: unknown column 'rsi' (did you mean 'rsi_14'?)"),
        ("close > max(high, 3)", None, "when: col 9: unknown function 'max'"),
        ("highest(high) > 1", None, "when: col 1: highest() takes 2 arguments (x, n), got 1"),
        ("close > abs(open, 1)", None, "when: col 9: abs() takes 1 argument (x), got 2"),
        ("close + 1", None, "when: col 1: must be a condition (true/false), e.g. rsi_14 < 30, but 'close + 1' is a number"),
        ("close > 1", "close > open", "score: col 1: must be a number, e.g. rsi_14 / 10, but 'close > open' is a condition"),
        ("rsi_14 and close > 1", None, "when: col 1: 'and' needs a condition (true/false), but 'rsi_14' is a number"),
        ("not close", None, "when: col 5: 'not' needs a condition (true/false), but 'close' is a number"),
        ("cpr_narrow + 1 > 2", None, "when: col 1: '+' needs a number, but 'cpr_narrow' is a condition"),
        ("highest(cpr_narrow, 3) > 1", None, "when: col 9: highest() needs a number, but 'cpr_narrow' is a condition"),
        ("(close > open) < 1", None, "when: col 1: '<' needs a number, but '(close > open)' is a condition"),
        ("close[-1] > close", None, "when: col 7: a negative lookback reads a future bar (look-ahead)"),
        ("sma(close, 3)[-2] > 1", None, "when: col 15: a negative lookback reads a future bar (look-ahead)"),
        ("close[1.5] > 1", None, "when: col 7: a lookback is a whole number of bars >= 0"),
        ("highest(high, 0) > 1", None, "when: col 15: highest() window n must be a whole number of bars from 1 to 5000, got '0'"),
        ("sma(close, volume) > 1", None, "when: col 12: sma() window n must be a whole number"),
        ("close >", None, "when: col 8: expected a number, a column, a function or '(', got the end of the expression"),
        ("(close > 1", None, "when: col 11: expected ')' to close the '(' at col 1"),
        ("close = 1", None, "when: col 7: '=' is not a comparison: write =="),
        ("1 < close < 2", None, "when: col 11: comparisons do not chain"),
        ("close > 1 open", None, "when: col 11: expected an operator"),
        ("close > 1 ;", None, "when: col 11: unexpected character ';'"),
        ("__import__('os')", None, "when: col 12: unexpected character \"'\""),
        ("   ", None, "when: col 1: is empty"),
        ("close > 1e999", None, "when: col 9: number 1e999 is too large"),
        ("close > 1", "rsi_14 /", "score: col 9: expected a number, a column, a function or '('"),
    ],
)
def test_errors_name_field_and_column(when, score, message):
    with pytest.raises(ExprError) as err:
        compile_scan(when, score)
    assert str(err.value).startswith(message), str(err.value)


def test_column_is_where_the_problem_starts():
    with pytest.raises(ExprError) as err:
        parse("rsi_14 < 30 and\n  clos > 1".replace("\n", " "))
    assert err.value.col == 19 and "did you mean 'close'" in err.value.message


def write_rules(tmp_path: Path, scans: list[dict]) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"scans": scans}))
    return path


@pytest.mark.parametrize(
    "scan,message",
    [
        ({"when": "close > rsi"}, "rules.yaml: scan 'oversold': when: col 9: unknown column 'rsi'"),
        ({"when": "close > 1", "score": "close >"}, "rules.yaml: scan 'oversold': score: col 8: expected a number"),
        ({}, "rules.yaml: scan 'oversold': when is required for kind 'expr'"),
        ({"when": "close > 1", "direction": "up"}, "rules.yaml: scan 'oversold': direction input should be 'long' or 'short'"),
        ({"when": "close > 1", "params": {"lookback": 3}}, "params ['lookback'] do not apply to kind 'expr'"),
        ({"kind": "breakout", "when": "close > 1"}, "rules.yaml: scan 'oversold': when is only for kind 'expr' (this scan is kind 'breakout')"),
    ],
)
def test_rules_file_errors(tmp_path, scan, message):
    """Bad input in rules.yaml: the load fails with file, scan, field and column; nothing loads."""
    item = {"name": "oversold", "kind": "expr", "timeframe": "daily", **scan}
    with pytest.raises(RulesError) as err:
        load_rules(write_rules(tmp_path, [item]))
    assert message in str(err.value), str(err.value)


def test_expr_vars_and_fingerprints_leave_other_scans_alone(tmp_path):
    scans = yaml.safe_load(RULES.read_text())["scans"]
    before = dbt_vars(load_rules(RULES))["scans"]
    expr = {"name": "oversold", "kind": "expr", "timeframe": "daily", "when": "rsi_14 < 30\n and close > sma_200",
            "score": 2, "direction": "short", "params": {"min_score": 1}, "filters": {"min_price": 5}}
    after = dbt_vars(load_rules(write_rules(tmp_path, [*scans, expr])))["scans"]
    assert after[:-1] == before  # same dicts, same fingerprints
    assert not any(k in s for s in before for k in ("when_sql", "score_sql", "expr_layers"))
    x = after[-1]
    assert x["when"] == "rsi_14 < 30 and close > sma_200" and x["score"] == "2" and x["direction"] == "short"
    assert x["when_sql"] == "((rsi_14 < (30.0::DOUBLE)) and (close > sma_200))"
    assert x["score_sql"] == "(2.0::DOUBLE)" and x["min_score"] == 1 and x["min_price"] == 5
    assert x["expr_layers"] == [] and x["expr_lookback"] == 0
    expr["when"] = "rsi_14 < 25 and close > sma_200"
    changed = dbt_vars(load_rules(write_rules(tmp_path, [*scans, expr])))["scans"][-1]
    assert changed["fingerprint"] != x["fingerprint"]
    default = dbt_vars(load_rules(write_rules(tmp_path, [{k: v for k, v in expr.items()
                                                          if k not in ("score", "direction", "params")}])))
    assert default["scans"][0]["direction"] == "long" and default["scans"][0]["min_score"] is None
    assert default["scans"][0]["score_sql"] == "(1.0::DOUBLE)"


@pytest.mark.parametrize(
    "text,bars",
    [
        ("close > 1", 0), ("close[3] > 1", 3), ("highest(high, 20)[1] < close", 20),
        ("crosses_above(close, sma(close, 5))", 5), ("sma(close - close[1], 5) > 0", 5),
        ("lowest(sma(low, 3), 4)[2] < low", 7),
    ],
)
def test_lookback_is_the_context_an_increment_needs(text, bars):
    assert compile_scan(text).lookback == bars


# --- compiled SQL == the same condition in polars ------------------------------------------

def bars_table(n: int = 80) -> pl.DataFrame:
    """Two series per symbol-timeframe, indicators random but with TA-Lib-like NULL warm-ups."""
    rng = np.random.default_rng(7)
    frames = []
    for symbol in ("AAA", "BBB"):
        for timeframe in ("1d", "1h"):
            close = 100 + np.cumsum(rng.normal(0, 1, n))
            open_ = close + rng.normal(0, 0.5, n)
            high = np.maximum(open_, close) + rng.uniform(0, 1, n)
            low = np.minimum(open_, close) - rng.uniform(0, 1, n)

            def warm(x, k):
                return [None] * k + list(x[k:])

            frames.append(pl.DataFrame({
                "symbol": symbol, "timeframe": timeframe, "bar_index": np.arange(n),
                "open": open_, "high": high, "low": low, "close": close,
                "volume": rng.integers(1000, 5000, n).astype(float),
                "rsi_14": warm(rng.uniform(10, 90, n), 14),
                "sma_200": warm(close - rng.normal(0, 2, n), 30),
                "ema_12": warm(close + rng.normal(0, 1, n), 11),
                "ema_26": warm(close + rng.normal(0, 1, n), 25),
                "macd_hist": warm(rng.normal(0, 1, n), 33),
                "cpr_narrow": rng.uniform(0, 1, n) < 0.3,
            }, schema_overrides={"rsi_14": pl.Float64, "sma_200": pl.Float64, "ema_12": pl.Float64,
                                 "ema_26": pl.Float64, "macd_hist": pl.Float64}))
    # shuffled: the SQL must order by bar_index itself
    return pl.concat(frames).sample(fraction=1.0, shuffle=True, seed=3)


def c(name: str, back: int = 0) -> pl.Expr:
    return pl.col(name).shift(back).over(SERIES, order_by="bar_index")


def roll(x: pl.Expr, n: int, how: str, back: int = 0) -> pl.Expr:
    rolled = getattr(x, f"rolling_{how}")(n, min_samples=n)
    return rolled.shift(back).over(SERIES, order_by="bar_index")


def shifted(x: pl.Expr, back: int) -> pl.Expr:
    return x.shift(back).over(SERIES, order_by="bar_index")


CASES = [
    ("rsi_14 < 30 and close > sma_200", None,
     (pl.col("rsi_14") < 30) & (pl.col("close") > pl.col("sma_200")), pl.lit(1.0)),
    ("close > highest(high, 20)[1] and macd_hist > macd_hist[1]", "macd_hist - macd_hist[1]",
     (pl.col("close") > roll(pl.col("high"), 20, "max", 1)) & (pl.col("macd_hist") > c("macd_hist", 1)),
     pl.col("macd_hist") - c("macd_hist", 1)),
    ("crosses_above(close, sma(close, 5))", "100 - rsi_14",
     (c("close", 1) <= roll(pl.col("close"), 5, "mean", 1)) & (pl.col("close") > roll(pl.col("close"), 5, "mean")),
     100 - pl.col("rsi_14")),
    ("crosses_below(ema_12, ema_26) or not cpr_narrow[2]", "-(close - close[3]) * 2",
     ((c("ema_12", 1) >= c("ema_26", 1)) & (pl.col("ema_12") < pl.col("ema_26"))) | ~c("cpr_narrow", 2),
     -(pl.col("close") - c("close", 3)) * 2),
    ("abs(close - open) / (high - low) > 0.3 and lowest(low, 3) >= lowest(low, 10)", "abs(close - open)",
     ((pl.col("close") - pl.col("open")).abs() / (pl.col("high") - pl.col("low")) > 0.3)
     & (roll(pl.col("low"), 3, "min") >= roll(pl.col("low"), 10, "min")),
     (pl.col("close") - pl.col("open")).abs()),
    ("sma(close - close[1], 5) > 0 and volume >= 2000", "sma(close - close[1], 5)[1]",
     (roll(pl.col("close") - c("close", 1), 5, "mean") > 0) & (pl.col("volume") >= 2000),
     roll(pl.col("close") - c("close", 1), 5, "mean", 1)),
    ("lowest(sma(low, 3), 4)[2] < low and (close > open or rsi_14 > 50)", "highest(sma(high - low, 2), 3)",
     (shifted(roll(roll(pl.col("low"), 3, "mean"), 4, "min"), 2) < pl.col("low"))
     & ((pl.col("close") > pl.col("open")) | (pl.col("rsi_14") > 50)),
     roll(roll(pl.col("high") - pl.col("low"), 2, "mean"), 3, "max")),
]


@pytest.mark.parametrize("when,score,want_fired,want_score", CASES, ids=[w for w, *_ in CASES])
def test_compiled_sql_equals_polars(when, score, want_fired, want_score):
    bars = bars_table()
    compiled = compile_scan(when, score)
    con = duckdb.connect()
    con.register("bars", bars.to_arrow())
    got = con.sql(f"select symbol, timeframe, bar_index, fired, score from ({select_sql(compiled, 'bars')}) "
                  "order by all").pl()
    expected = (bars.with_columns(fired=want_fired, score=want_score.cast(pl.Float64))
                .select("symbol", "timeframe", "bar_index", "fired", "score").sort(["symbol", "timeframe", "bar_index"]))
    fired = got.filter(pl.col("fired").fill_null(False))
    want = expected.filter(pl.col("fired").fill_null(False))
    assert 0 < fired.height < got.height, "the case must fire on some bars and not others"
    assert fired.select("symbol", "timeframe", "bar_index").rows() == want.select("symbol", "timeframe", "bar_index").rows()
    assert np.allclose(fired["score"].to_numpy(), want["score"].to_numpy(), equal_nan=True)
    assert (fired["score"].is_null() == want["score"].is_null()).all()


@pytest.mark.parametrize("when,score", [(w, sc) for w, sc, *_ in CASES], ids=[w for w, *_ in CASES])
def test_lookback_bars_of_context_give_the_full_result(when, score):
    """What the incremental build relies on: evaluated on only the bars from ``start - lookback``
    on, every bar from ``start`` gets what the whole history gives (and one bar less may not)."""
    bars = bars_table()
    compiled = compile_scan(when, score)
    con = duckdb.connect()
    con.register("bars", bars.to_arrow())
    start = 50

    def run(context: int) -> list[tuple]:
        return con.sql(f"select symbol, timeframe, bar_index, fired, round(score, 9) from "
                       f"({select_sql(compiled, f'(select * from bars where bar_index >= {start - context})')}) "
                       f"where bar_index >= {start} order by all").fetchall()

    whole = run(start)
    assert run(compiled.lookback) == whole
    if compiled.lookback:
        assert run(compiled.lookback - 1) != whole


# --- dbt: marts.signals ---------------------------------------------------------------------

EXPR_SCANS = [
    {"name": "expr_breakout", "kind": "expr", "timeframe": "daily", "direction": "long",
     "when": "close > highest(high, 10)[1] and rsi_14 > 50", "score": "rsi_14 - 50"},
    {"name": "expr_fade", "kind": "expr", "timeframe": "daily", "direction": "short",
     "when": "crosses_below(close, sma(close, 10)) or sma(close - close[1], 5) < -1",
     "filters": {"min_price": 5}, "params": {"min_score": 0}, "score": "sma(close[1] - close, 3)"},
]
SPLIT = date(2023, 3, 31)
FIX = ("SYN0002", date(2023, 1, 17))  # a bar before the split corrected in the second load


def expected_signals(warehouse) -> pl.DataFrame:
    """EXPR_SCANS computed directly on int_indicators with polars."""
    ind = query(warehouse, "select symbol, timeframe, ts, bar_index, open, high, low, close, rsi_14 "
                           "from intermediate.int_indicators where timeframe = '1d'")
    a = ind.with_columns(
        fired=(pl.col("close") > roll(pl.col("high"), 10, "max", 1)) & (pl.col("rsi_14") > 50),
        score=pl.col("rsi_14") - 50, scan=pl.lit("expr_breakout"), kind=pl.lit("expr_long"))
    sma10 = roll(pl.col("close"), 10, "mean")
    b = ind.with_columns(
        fired=(((c("close", 1) >= shifted(sma10, 1)) & (pl.col("close") < sma10))
               | (roll(pl.col("close") - c("close", 1), 5, "mean") < -1)) & (pl.col("close") >= 5),
        score=roll(c("close", 1) - pl.col("close"), 3, "mean"),
        scan=pl.lit("expr_fade"), kind=pl.lit("expr_short"))
    b = b.filter(pl.col("score") >= 0)
    both = pl.concat([a, b]).filter(pl.col("fired").fill_null(False) & pl.col("score").is_not_null())
    return both.select("scan", "symbol", "ts", "kind", "score").sort("scan", "symbol", "ts")


def stored(warehouse, where: str) -> pl.DataFrame:
    return query(warehouse, "select * exclude (as_of) from marts.signals "
                            f"where {where} order by scan, symbol, timeframe, ts, kind")


def test_dbt_expr_scans(tmp_path, dbt):
    bars = synthetic(4, date(2022, 1, 1), date(2023, 6, 30), "1d")
    fix = (pl.col("symbol") == FIX[0]) & (pl.col("ts").dt.date() == FIX[1])
    final = bars.with_columns(close=pl.when(fix).then(pl.col("close") * 1.06).otherwise(pl.col("close"))
                              ).with_columns(high=pl.max_horizontal("high", "close"))
    with_expr = write_rules(tmp_path, [*yaml.safe_load(RULES.read_text())["scans"], *EXPR_SCANS])

    # full: the repo's scans alone, then the same plus the expr scans (computed in full)
    full = tmp_path / "full.duckdb"
    load(full, final)
    dbt(full, "run", RULES)
    existing = stored(full, "true")
    dbt(full, "build", with_expr)  # build: the accepted_values tests on kind run too
    assert stored(full, "scan not like 'expr_%'").equals(existing)

    got = stored(full, "scan like 'expr_%'")
    want = expected_signals(full)
    assert got.select("scan", "symbol", "ts", "kind").rows() == want.select("scan", "symbol", "ts", "kind").rows()
    assert np.allclose(got["score"].to_numpy(), want["score"].to_numpy())
    assert got.group_by("scan").len().height == 2  # both scans fired
    assert set(got["direction"]) == {"long", "short"} and got["level"].is_null().all()
    assert got.filter(pl.col("scan") == "expr_breakout")["reason"][0].startswith(
        "long: close > highest(high, 10)[1] and rsi_14 > 50 (close ")

    # incremental, on a DuckLake (the default warehouse): part of the history, then the rest
    # with a corrected earlier bar
    (tmp_path / "inc").mkdir()
    inc = lake(tmp_path / "inc")
    load(inc, bars.filter(pl.col("ts").dt.date() <= SPLIT))
    dbt(inc, "run", with_expr)
    before = stored(inc, "scan like 'expr_%'")
    load(inc, pl.concat([final.filter(pl.col("ts").dt.date() > SPLIT), final.filter(fix)]))
    dbt(inc, "run", with_expr)
    assert stored(inc, "true").equals(stored(full, "true"))
    assert not before.equals(stored(inc, "scan like 'expr_%'"))  # the increment changed something
