"""Every technical indicator, per (symbol, timeframe) series, equal to TA-Lib's.

Recursive indicators (EMA, RSI, MACD, ATR) depend on the whole history of a series, so
a series touched by new or corrected bars is recomputed from its first bar with TA-Lib
(the same C code traders compare against), and only rows from the earliest changed bar on
are written (delete+insert on the bar key). That makes an incremental build identical to
a full rebuild, for appended bars and for late or corrected bars in the middle of history.

A change is detected as raw ``ingested_at`` later than the newest ``ingested_at`` already
in this table (the warehouse upsert stamps every written bar with ``now()``).

CPR (central pivot range) comes from the previous session of the same series: for daily
bars the previous bar, for intraday bars the previous session's high, low and last close.
``cpr_narrow`` is true when the session's width% is in the lowest decile of the last
``cpr_lookback`` sessions (fewer than 10% of them narrower).
"""

import datetime as _dt

import numpy as np
import polars as pl
import talib

BAR_COLUMNS = ["open", "high", "low", "close", "volume"]
INDICATORS = [
    "sma_20", "sma_50", "sma_200", "ema_12", "ema_26", "rsi_14",
    "macd", "macd_signal", "macd_hist", "bb_upper", "bb_middle", "bb_lower",
    "atr_14", "volume_avg_20",
    "cpr_pivot", "cpr_bc", "cpr_tc", "cpr_width_pct", "cpr_width_rank",
]


def _series_starts(symbols: np.ndarray, timeframes: np.ndarray) -> np.ndarray:
    n = len(symbols)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.ones(n, dtype=bool)
    change[1:] = (symbols[1:] != symbols[:-1]) | (timeframes[1:] != timeframes[:-1])
    return np.flatnonzero(change)


def _talib(out: dict, starts: np.ndarray, n: int, o, h, l, c, v) -> None:
    ends = np.append(starts[1:], n)
    for a, b in zip(starts.tolist(), ends.tolist()):
        cs, hs, ls, vs = c[a:b], h[a:b], l[a:b], v[a:b]
        out["sma_20"][a:b] = talib.SMA(cs, 20)
        out["sma_50"][a:b] = talib.SMA(cs, 50)
        out["sma_200"][a:b] = talib.SMA(cs, 200)
        out["ema_12"][a:b] = talib.EMA(cs, 12)
        out["ema_26"][a:b] = talib.EMA(cs, 26)
        out["rsi_14"][a:b] = talib.RSI(cs, 14)
        m, s, hist = talib.MACD(cs, 12, 26, 9)
        out["macd"][a:b], out["macd_signal"][a:b], out["macd_hist"][a:b] = m, s, hist
        up, mid, lo = talib.BBANDS(cs, 20, 2.0, 2.0)
        out["bb_upper"][a:b], out["bb_middle"][a:b], out["bb_lower"][a:b] = up, mid, lo
        out["atr_14"][a:b] = talib.ATR(hs, ls, cs, 14)
        out["volume_avg_20"][a:b] = talib.SMA(vs, 20)


def _cpr(out: dict, series_id: np.ndarray, session_date: np.ndarray, h, l, c, lookback: int) -> None:
    """Session-level CPR from the previous session of the same series, broadcast to bars."""
    n = len(c)
    new_sess = np.ones(n, dtype=bool)
    new_sess[1:] = (series_id[1:] != series_id[:-1]) | (session_date[1:] != session_date[:-1])
    s_start = np.flatnonzero(new_sess)
    s_end = np.append(s_start[1:], n)
    s_series = series_id[s_start]
    sh = np.maximum.reduceat(h, s_start)
    sl = np.minimum.reduceat(l, s_start)
    sc = c[s_end - 1]
    m = len(s_start)
    prev_ok = np.zeros(m, dtype=bool)
    prev_ok[1:] = s_series[1:] == s_series[:-1]
    ph, pl_, pc = (np.full(m, np.nan) for _ in range(3))
    ph[1:], pl_[1:], pc[1:] = sh[:-1], sl[:-1], sc[:-1]
    ph[~prev_ok] = pl_[~prev_ok] = pc[~prev_ok] = np.nan
    pivot = (ph + pl_ + pc) / 3.0
    bc = (ph + pl_) / 2.0
    tc = 2.0 * pivot - bc
    width = np.abs(tc - bc) / pivot
    # rank of this session's width among the last `lookback` sessions of the same series
    rank = np.full(m, np.nan)
    if m >= lookback:
        win = np.lib.stride_tricks.sliding_window_view(width, lookback)  # rows end at j
        last = np.arange(lookback - 1, m)
        first = last - lookback + 1
        # whole window inside one series and every width defined
        same_series = s_series[first] == s_series[last]
        defined = ~np.isnan(win).any(axis=1)
        ok = same_series & defined
        counts = (win < win[:, -1:]).sum(axis=1)
        rank[last[ok]] = counts[ok] / lookback
    sess_of_bar = np.cumsum(new_sess) - 1
    out["cpr_pivot"][:] = pivot[sess_of_bar]
    out["cpr_bc"][:] = bc[sess_of_bar]
    out["cpr_tc"][:] = tc[sess_of_bar]
    out["cpr_width_pct"][:] = (width * 100.0)[sess_of_bar]
    out["cpr_width_rank"][:] = rank[sess_of_bar]
    bar_pos = np.arange(n)
    out["_session_bar_index"] = bar_pos - s_start[sess_of_bar]


def model(dbt, session):
    dbt.config(
        materialized="incremental",
        incremental_strategy="delete+insert",
        unique_key=["symbol", "timeframe", "ts"],
    )
    lookback = int(dbt.config.get("cpr_lookback") or 20)
    bars_sql = dbt.ref("stg_bars").sql_query()
    computed_at = _dt.datetime.now(_dt.UTC).replace(tzinfo=None)

    full = not dbt.is_incremental
    if not full:
        this = str(dbt.this)
        stale_params = session.execute(
            f"select count(*) from {this} where cpr_lookback <> {lookback}"
        ).fetchone()[0]
        full = stale_params > 0
    if full:
        scope_sql = f"select symbol, timeframe, min(ts) as from_ts from ({bars_sql}) b group by all"
    else:
        scope_sql = f"""
            select symbol, timeframe, min(ts) as from_ts from ({bars_sql}) b
            where ingested_at > (select coalesce(max(ingested_at), '-infinity'::timestamp) from {this})
            group by all"""
    session.execute(f"create or replace temp table __int_indicators_scope as {scope_sql}")
    bars = session.sql(
        f"""select b.symbol, b.timeframe, b.ts, b.session_date, b.open, b.high, b.low,
                   b.close, b.volume, b.ingested_at, s.from_ts
            from ({bars_sql}) b join __int_indicators_scope s using (symbol, timeframe)
            order by b.symbol, b.timeframe, b.ts"""
    ).pl()
    session.execute("drop table if exists __int_indicators_scope")

    n = bars.height
    sym = bars["symbol"].to_numpy()
    tfr = bars["timeframe"].to_numpy()
    o, h, l, c, v = (bars[k].to_numpy().astype(np.float64, copy=False) for k in BAR_COLUMNS)
    starts = _series_starts(sym, tfr)
    series_id = np.zeros(n, dtype=np.int64)
    if n:
        series_id[starts] = 1
        series_id = np.cumsum(series_id) - 1
    out = {k: np.full(n, np.nan) for k in INDICATORS}
    _talib(out, starts, n, o, h, l, c, v)
    if n:
        _cpr(out, series_id, bars["session_date"].to_physical().to_numpy(), h, l, c, lookback)
        bar_index = np.arange(n) - starts[series_id]
    else:
        out["_session_bar_index"] = np.zeros(0, dtype=np.int64)
        bar_index = np.zeros(0, dtype=np.int64)

    session_bar_index = out.pop("_session_bar_index")
    result = bars.select("symbol", "timeframe", "ts", "session_date", *BAR_COLUMNS).with_columns(
        pl.Series("bar_index", bar_index, dtype=pl.Int64),
        pl.Series("session_bar_index", session_bar_index, dtype=pl.Int64),
        *[pl.Series(k, out[k], dtype=pl.Float64).fill_nan(None) for k in INDICATORS],
    )
    result = result.with_columns(
        (pl.col("cpr_width_rank") < 0.1).alias("cpr_narrow"),
        pl.lit(lookback, dtype=pl.Int32).alias("cpr_lookback"),
        bars["ingested_at"],
        pl.lit(computed_at, dtype=pl.Datetime("us")).alias("computed_at"),
    )
    if not full:
        result = (
            result.with_columns(bars["from_ts"])
            .filter(pl.col("ts") >= pl.col("from_ts"))
            .drop("from_ts")
        )
    return result
