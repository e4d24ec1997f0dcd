"""Bar quality: row rules that split a load into accepted and rejected rows, and the
great-expectations suite that the blocking Dagster asset checks run on stored bars.

Row rules run at ingest, vectorised in polars, so every bad row is named with its rule and
a reason a person can act on, and only good rows reach the warehouse. The GX suite states
the same invariants as expectations and is evaluated on what is *stored*, so bars that
arrive any other way (a manual INSERT, a bug) still stop downstream signals and orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from trading_pipeline.marketdata import calendars
from trading_pipeline.marketdata.calendars import DEFAULT_CALENDAR

PRICE_COLS = ("open", "high", "low", "close")
NUM_COLS = (*PRICE_COLS, "volume")

REJECT_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(), "row_number": pl.Int64(), "symbol": pl.String(),
    "timeframe": pl.String(), "ts": pl.Datetime("us"), "open": pl.Float64(),
    "high": pl.Float64(), "low": pl.Float64(), "close": pl.Float64(), "volume": pl.Float64(),
    "rule": pl.String(), "reason": pl.String(), "run_id": pl.String(),
}

RULES = (
    "not_null", "type", "finite", "positive_price", "high_low", "volume_nonnegative",
    "duplicate", "session", "future",
)


@dataclass(frozen=True)
class Validated:
    good: pl.DataFrame  # canonical bars + session_date
    rejected: pl.DataFrame  # REJECT_SCHEMA


def _fmt(col: str) -> pl.Expr:
    return pl.col(col).round(6).cast(pl.String)


def _row_rules() -> list[tuple[str, pl.Expr, pl.Expr]]:
    """(rule, violated, reason) in the order they are reported; the first match wins."""
    rules: list[tuple[str, pl.Expr, pl.Expr]] = []
    for c in ("symbol", "ts"):
        rules.append(("not_null", pl.col(c).is_null(), pl.lit(f"{c} is missing")))
    for c in NUM_COLS:
        raw = f"{c}_raw"
        rules.append((
            "not_null",
            pl.col(c).is_null() & (pl.col(raw).is_null() | (pl.col(raw) == "")),
            pl.lit(f"{c} is missing"),
        ))
        rules.append((
            "type",
            pl.col(c).is_null(),
            pl.format("{} {} is not a number", pl.lit(c), pl.col(raw).str.slice(0, 40)),
        ))
    for c in NUM_COLS:
        rules.append(("finite", ~pl.col(c).is_finite(), pl.format("{} is {}", pl.lit(c), _fmt(c))))
    for c in PRICE_COLS:
        rules.append(("positive_price", pl.col(c) <= 0, pl.format("{} {} is not positive", pl.lit(c), _fmt(c))))
    rules += [
        ("high_low", pl.col("high") < pl.col("low"),
         pl.format("high {} below low {}", _fmt("high"), _fmt("low"))),
        ("high_low", pl.col("high") < pl.max_horizontal("open", "close"),
         pl.format("high {} below max(open {}, close {})", _fmt("high"), _fmt("open"), _fmt("close"))),
        ("high_low", pl.col("low") > pl.min_horizontal("open", "close"),
         pl.format("low {} above min(open {}, close {})", _fmt("low"), _fmt("open"), _fmt("close"))),
        ("volume_nonnegative", pl.col("volume") < 0, pl.format("volume {} is negative", _fmt("volume"))),
    ]
    return rules


def _ensure_raw_columns(df: pl.DataFrame) -> pl.DataFrame:
    add = [pl.col(c).cast(pl.String).alias(f"{c}_raw") for c in NUM_COLS if f"{c}_raw" not in df.columns]
    if "row_number" not in df.columns:
        add.append(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("row_number"))
    return df.with_columns(add) if add else df


def _session_dates(df: pl.DataFrame, calendar_of: dict[str, str], intraday: bool) -> pl.DataFrame:
    """Add ``session_date`` (null when the bar is outside every session of its calendar).

    Rows come back in the order they came in: callers compare the result with the input
    row by row, and symbols of different calendars may be interleaved.
    """
    parts = []
    cal_col = df.with_columns(
        pl.col("symbol").replace_strict(calendar_of, default=DEFAULT_CALENDAR).alias("_cal"),
        pl.int_range(pl.len()).alias("_row"),
    )
    for cal, part in cal_col.partition_by("_cal", as_dict=True).items():
        name = cal[0]
        sched = calendars._schedule(name)
        if not intraday:
            known = sched.select(pl.col("session_date"), pl.lit(True).alias("_ok"))
            part = part.with_columns(pl.col("ts").dt.date().alias("_d")).join(
                known, left_on="_d", right_on="session_date", how="left"
            ).with_columns(
                pl.when(pl.col("_ok")).then(pl.col("_d")).otherwise(None).alias("session_date")
            ).drop("_d", "_ok")
        else:
            part = part.sort("ts").join_asof(
                sched.sort("open_utc"), left_on="ts", right_on="open_utc", strategy="backward"
            ).with_columns(
                pl.when(pl.col("ts") < pl.col("close_utc")).then(pl.col("session_date"))
                .otherwise(None).alias("session_date")
            ).drop("open_utc", "close_utc")
        parts.append(part.drop("_cal"))
    if not parts:
        return df.with_columns(pl.lit(None, pl.Date).alias("session_date"))
    return pl.concat(parts, how="vertical_relaxed").sort("_row").drop("_row")


def validate(
    bars: pl.DataFrame,
    *,
    source: str,
    calendar_of: dict[str, str],
    now: datetime | None = None,
    run_id: str | None = None,
) -> Validated:
    """Split bars into good rows (deduplicated, sorted, with session dates) and rejections."""
    now = (now or datetime.now(UTC)).replace(tzinfo=None)
    df = _ensure_raw_columns(bars)
    if df.is_empty():
        return Validated(df.select(_good_cols(df)), pl.DataFrame(schema=REJECT_SCHEMA))
    rule_expr: pl.Expr = pl.lit(None, pl.String)
    reason_expr: pl.Expr = pl.lit(None, pl.String)
    for rule, bad, reason in reversed(_row_rules()):
        rule_expr = pl.when(bad.fill_null(False)).then(pl.lit(rule)).otherwise(rule_expr)
        reason_expr = pl.when(bad.fill_null(False)).then(reason).otherwise(reason_expr)
    df = df.with_columns(rule_expr.alias("rule"), reason_expr.alias("reason"))

    ok = df.filter(pl.col("rule").is_null())
    # duplicates: identical repeats collapse to one row; conflicting repeats are all rejected
    key = ["symbol", "timeframe", "ts"]
    ok = ok.with_columns(
        pl.len().over(key).alias("_n"),
        pl.struct(*NUM_COLS).n_unique().over(key).alias("_variants"),
        pl.int_range(pl.len()).over(key).alias("_k"),
    )
    ok = ok.with_columns(
        pl.when(pl.col("_variants") > 1).then(pl.lit("duplicate"))
        .when(pl.col("_k") > 0).then(pl.lit("duplicate")).otherwise(None).alias("rule"),
        pl.when(pl.col("_variants") > 1)
        .then(pl.format("{} rows for {} {} {} disagree; fix the source, none was loaded",
                        pl.col("_n"), pl.col("symbol"), pl.col("timeframe"), pl.col("ts").cast(pl.String)))
        .when(pl.col("_k") > 0)
        .then(pl.format("repeats an earlier row for {} {} {}", pl.col("symbol"), pl.col("timeframe"),
                        pl.col("ts").cast(pl.String)))
        .otherwise(None).alias("reason"),
    ).drop("_n", "_variants", "_k")

    intraday = bool(ok.height) and ok["timeframe"][0] != "1d"
    clean = ok.filter(pl.col("rule").is_null())
    clean = _session_dates(clean, calendar_of, intraday)
    today = now.date()
    # a bar in the future is "future" even past the end of its calendar (where it has no session)
    clean = clean.with_columns(
        pl.when(pl.col("ts").dt.date() > today if not intraday else pl.col("ts") > now)
        .then(pl.lit("future"))
        .when(pl.col("session_date").is_null()).then(pl.lit("session")).otherwise(None).alias("rule"),
    ).with_columns(
        pl.when(pl.col("rule") == "session")
        .then(pl.format("{} {} is outside the {} sessions of {}",
                        pl.col("timeframe"), pl.col("ts").cast(pl.String),
                        pl.col("symbol").replace_strict(calendar_of, default=DEFAULT_CALENDAR), pl.col("symbol")))
        .when(pl.col("rule") == "future")
        .then(pl.format("bar at {} is in the future", pl.col("ts").cast(pl.String)))
        .otherwise(None).alias("reason")
    )

    rejected = pl.concat(
        [
            df.filter(pl.col("rule").is_not_null()),
            ok.filter(pl.col("rule").is_not_null()),
            clean.filter(pl.col("rule").is_not_null()).drop("session_date"),
        ],
        how="diagonal_relaxed",
    )
    rejected = rejected.with_columns(
        pl.lit(source).alias("source"), pl.lit(run_id, pl.String).alias("run_id"),
        *[pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).alias(c) for c in NUM_COLS],
    ).select([pl.col(c).cast(t) for c, t in REJECT_SCHEMA.items()]).sort("row_number")
    good = clean.filter(pl.col("rule").is_null()).sort("symbol", "ts").select(_good_cols(clean))
    return Validated(good, rejected)


def _good_cols(df: pl.DataFrame) -> list[pl.Expr]:
    from trading_pipeline.marketdata.bars import BAR_SCHEMA

    return [
        (pl.col(c) if c in df.columns else pl.lit(None)).cast(t).alias(c) for c, t in BAR_SCHEMA.items()
    ]


# --------------------------------------------------------------------------------------
# great-expectations suite, evaluated by the blocking asset checks on stored bars
# --------------------------------------------------------------------------------------

# the suite's expectations grouped by the rule (asset check) they state; defs/bars.py reports
# one blocking check per group, ingest() refuses a load whose own bars break any of them
CHECK_GROUPS: dict[str, tuple[str, ...]] = {
    "columns_not_null": ("expect_table_columns_to_match_set", "expect_column_values_to_not_be_null"),
    "positive_prices": ("expect_column_values_to_be_between(open", "expect_column_values_to_be_between(high",
                        "expect_column_values_to_be_between(low", "expect_column_values_to_be_between(close"),
    "high_low_consistent": ("expect_column_pair_values_a_to_be_greater_than_b",),
    "volume_nonnegative": ("expect_column_values_to_be_between(volume",),
    "unique_keys": ("expect_compound_columns_to_be_unique",),
    "in_session": ("expect_column_values_to_be_in_set(in_session",),
    "no_future_bars": ("expect_column_values_to_be_between(ts",),
}


def failures_by_rule(results: list[dict], df: pl.DataFrame) -> list[dict]:
    """The failed expectations of ``run_suite(df)``, one entry per rule (check group): how
    many bars break it, which symbols and sessions they are in, and up to five
    example bars (``SYMBOL TIMEFRAME TS``)."""
    out = []
    for check, prefixes in CHECK_GROUPS.items():
        failed = [r for r in results if r["expectation"].startswith(prefixes) and not r["success"]]
        if not failed:
            continue
        rows: set[int] = set()
        for r in failed:
            # an expectation on the table as a whole (the column set) names no row: all of them
            rows.update(range(df.height) if r.get("unexpected_rows") is None else r["unexpected_rows"])
        bad = df[sorted(rows)] if rows else df.clear()
        out.append({
            "check": check,
            "rows": bad.height,
            "symbols": sorted(bad["symbol"].drop_nulls().unique().to_list()),
            "sessions": sorted({calendars.session_of(t.date()).isoformat() for t in bad["ts"].drop_nulls().to_list()}),
            "bars": [f"{s} {tf} {ts}" for s, tf, ts in bad.head(5).select("symbol", "timeframe", "ts").iter_rows()],
        })
    return out


def describe_failures(failures: list[dict]) -> list[str]:
    """One line per failed rule: rows, symbols, sessions and example bars."""
    lines = []
    for f in failures:
        sessions = f["sessions"]
        span = (sessions[0] + (f" .. {sessions[-1]}" if len(sessions) > 1 else "")) if sessions else "?"
        syms = f["symbols"]
        shown = ", ".join(syms[:10]) + (f" and {len(syms) - 10:,} more" if len(syms) > 10 else "")
        lines.append(f"{f['check']}: {f['rows']:,} row(s); symbols {shown or '?'}; sessions {span}"
                     + (f"; e.g. {', '.join(f['bars'][:3])}" if f["bars"] else ""))
    return lines


def _gx():
    # great-expectations 1.24 sends no usage analytics (its analytics module is gone), so
    # nothing to switch off; dbt's telemetry is off in every dbt process we start
    import great_expectations as gx

    return gx


def bar_expectations(now: datetime) -> list:
    """The bar-quality suite: one expectation per invariant (each shown as its own result)."""
    gxe = _gx().expectations
    cols = ["symbol", "timeframe", "ts", "session_date", "open", "high", "low", "close", "volume"]
    exps = [gxe.ExpectTableColumnsToMatchSet(column_set=cols, exact_match=False)]
    exps += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in cols]
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, strict_min=True) for c in PRICE_COLS]
    exps += [gxe.ExpectColumnValuesToBeBetween(column="volume", min_value=0)]
    exps += [
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B=b, or_equal=True)
        for b in ("open", "close", "low")
    ]
    exps += [
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=a, column_B="low", or_equal=True)
        for a in ("open", "close")
    ]
    exps += [gxe.ExpectCompoundColumnsToBeUnique(column_list=["symbol", "timeframe", "ts"])]
    exps += [gxe.ExpectColumnValuesToBeInSet(column="in_session", value_set=[True])]
    exps += [gxe.ExpectColumnValuesToBeBetween(column="ts", max_value=now.replace(tzinfo=None))]
    return exps


def expectation_name(exp) -> str:
    cfg = exp.configuration.kwargs if hasattr(exp, "configuration") else {}
    what = exp.expectation_type if hasattr(exp, "expectation_type") else type(exp).__name__
    args = ",".join(
        str(cfg[k]) for k in ("column", "column_A", "column_B", "column_list", "column_set") if k in cfg and k != "column_set"
    )
    return f"{what}({args})" if args else what


def _config_key(config) -> str:
    """An expectation's type and arguments (what tells two expectations of the suite apart)."""
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    return f"{config.type}:{sorted(kwargs.items(), key=lambda kv: kv[0])!r}"


def run_suite(df: pl.DataFrame, calendar_of: dict[str, str], now: datetime | None = None) -> list[dict]:
    """Validate stored bars with the GX suite; one dict per expectation (success, details).

    ``unexpected_rows`` are the positions in ``df`` of the rows that break the expectation
    (every one of them, so a caller can tell which session each failure belongs to); it is
    None for an expectation on the table as a whole (the column set), which no row breaks
    alone. ``example_rows`` are the positions of ``unexpected_examples``, in order.
    """
    now = now or datetime.now(UTC)
    intraday = bool(df.height) and df["timeframe"][0] != "1d"
    checked = _session_dates(
        df.drop("session_date") if "session_date" in df.columns else df, calendar_of, intraday
    )
    in_session = checked["session_date"].is_not_null()
    if "session_date" in df.columns:
        in_session = in_session & (checked["session_date"] == df["session_date"]).fill_null(False)
    pdf = df.with_columns(in_session.alias("in_session")).to_pandas()
    # nanoseconds: GX compares a datetime64[ns] column vectorized, any other unit (polars
    # gives microseconds) one Python call per row (half the suite's time at 300k bars)
    pdf["ts"] = pdf["ts"].astype("datetime64[ns]")
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        context.data_sources.add_pandas("bars")
        .add_dataframe_asset("raw_bars")
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": pdf})
    )
    exps = bar_expectations(now)
    # one validation of the whole suite: GX hashes the batch's frame once per validate call
    # (the whole frame, every column: as long as the expectations themselves, called per
    # expectation); COMPLETE: every failing row's index (pdf keeps polars' 0..n-1 positions)
    validated = batch.validate(gx.ExpectationSuite(name="bars", expectations=exps), result_format="COMPLETE")
    # the suite's results come back in its own order: match them by configuration
    by_config = {_config_key(res.expectation_config): res for res in validated.results}
    out = []
    for exp in exps:
        res = by_config[_config_key(exp.configuration)]
        r = res.result or {}
        rows = r.get("unexpected_index_list")
        out.append(
            {
                "expectation": expectation_name(exp),
                "success": bool(res.success),
                "unexpected_count": r.get("unexpected_count"),
                "unexpected_examples": [str(x) for x in (r.get("partial_unexpected_list") or [])[:5]],
                "example_rows": [int(i) for i in (r.get("partial_unexpected_index_list") or [])[:5]],
                "unexpected_rows": None if rows is None else [int(i) for i in rows],
            }
        )
    return out
