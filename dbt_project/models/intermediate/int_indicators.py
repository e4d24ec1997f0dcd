"""Every technical indicator, per (symbol, timeframe) series, equal to TA-Lib's.

Recursive indicators (EMA, RSI, MACD, ATR) depend on the whole history of a series, so
a series touched by new or corrected bars is recomputed from its first bar with TA-Lib
(the same C code traders compare against), and only rows from the earliest changed bar on
are written (delete+insert on the bar key). That makes an incremental build identical to
a full rebuild, for appended bars and for late or corrected bars in the middle of history.

The bars come from ``int_bars_adjusted``: split-adjusted by default (var
``price_adjustment``), so a split day is a normal day. A change is detected as an
``ingested_at`` later than the newest ``ingested_at`` already in this table: the warehouse
upsert stamps every written bar with ``now()``, and int_bars_adjusted stamps every bar a new
corporate action adjusts with the time the action took effect, so the series is recomputed
from its first bar. A different ``price_adjustment`` (or ``cpr_lookback``) than the stored
rows' recomputes everything.

CPR (central pivot range) comes from the previous session of the same series: for daily
bars the previous bar, for intraday bars the previous session's high, low and last close.
``cpr_narrow`` is true when the session's width% is in the lowest decile of the last
``cpr_lookback`` sessions (fewer than 10% of them narrower).
"""

import datetime as _dt

import numpy as np
import polars as pl
import pyarrow as pa
import talib

# numpy asks for transparent huge pages on big arrays; with THP defrag=madvise (common on
# VMs) each first touch then stalls in compaction: measured 7.5 s vs 3.3 s for 12.6M bars.
try:
    np._core.multiarray._set_madvise_hugepage(False)
except AttributeError:  # private API; only a speed-up
    pass

BAR_COLUMNS = ["open", "high", "low", "close", "volume"]
TALIB_COLUMNS = [
    "sma_20", "sma_50", "sma_200", "ema_12", "ema_26", "rsi_14",
    "macd", "macd_signal", "macd_hist", "bb_upper", "bb_middle", "bb_lower",
    "atr_14", "volume_avg_20",
]
CPR_COLUMNS = ["cpr_pivot", "cpr_bc", "cpr_tc", "cpr_width_pct", "cpr_width_rank"]
INDICATORS = TALIB_COLUMNS + CPR_COLUMNS


def _talib(starts, ends, keep_from, o, h, lo, c, v) -> dict[str, np.ndarray]:
    """TA-Lib over each whole series [start, end); only rows [keep_from, end) are kept."""
    kept = ends - keep_from
    offsets = np.concatenate([[0], np.cumsum(kept)])
    out = {k: np.empty(int(offsets[-1])) for k in TALIB_COLUMNS}  # every slot is written
    for a, b, k, w in zip(starts.tolist(), ends.tolist(), keep_from.tolist(), offsets[:-1].tolist(), strict=True):
        if k == b:
            continue
        cs, hs, ls, vs = c[a:b], h[a:b], lo[a:b], v[a:b]
        t, r, e = k - a, w, w + (b - k)
        macd, signal, hist = talib.MACD(cs, 12, 26, 9)
        upper, middle, lower = talib.BBANDS(cs, 20, 2.0, 2.0)
        for name, values in (
            ("sma_20", talib.SMA(cs, 20)), ("sma_50", talib.SMA(cs, 50)),
            ("sma_200", talib.SMA(cs, 200)), ("ema_12", talib.EMA(cs, 12)),
            ("ema_26", talib.EMA(cs, 26)), ("rsi_14", talib.RSI(cs, 14)),
            ("macd", macd), ("macd_signal", signal), ("macd_hist", hist),
            ("bb_upper", upper), ("bb_middle", middle), ("bb_lower", lower),
            ("atr_14", talib.ATR(hs, ls, cs, 14)), ("volume_avg_20", talib.SMA(vs, 20)),
        ):
            out[name][r:e] = values[t:]
    return out


def _cpr(out: dict, new_series: np.ndarray, new_sess: np.ndarray, h, lo, c, lookback: int) -> None:
    """Session-level CPR from the previous session of the same series, broadcast to bars.

    ``new_series`` / ``new_sess`` flag the first bar of each series / session.
    """
    n = len(c)
    daily = bool(new_sess.all())  # one bar per session: no aggregation, no broadcast
    if daily:
        sh, sl, sc, first_of_series = h, lo, c, new_series
    else:
        s_start = np.flatnonzero(new_sess)
        s_end = np.append(s_start[1:], n)
        sh = np.maximum.reduceat(h, s_start)
        sl = np.minimum.reduceat(lo, s_start)
        sc = c[s_end - 1]
        first_of_series = new_series[s_start]
    m = len(sc)
    pivot = np.empty(m)
    bc = np.empty(m)
    pivot[0] = bc[0] = np.nan
    np.add(sh[:-1], sl[:-1], out=bc[1:])
    np.add(bc[1:], sc[:-1], out=pivot[1:])
    pivot[1:] /= 3.0
    bc[1:] /= 2.0
    pivot[first_of_series] = np.nan  # no previous session inside this series
    bc[first_of_series] = np.nan
    tc = 2.0 * pivot - bc
    width = np.abs(tc - bc) / pivot
    # rank of this session's width among the last `lookback` sessions of the same series:
    # how many of them are strictly narrower; defined only when all `lookback` widths exist
    # (they do not exist in a series' first session, so a window holding one is undefined)
    rank = np.full(m, np.nan)
    if m >= lookback:
        undefined = np.isnan(width)
        # sessions since the last undefined width (inclusive count of defined ones)
        idx = np.arange(m)
        last_undef = np.maximum.accumulate(np.where(undefined, idx, -1))
        run = idx - last_undef  # defined widths ending here, this one included
        cur = width[lookback - 1 :]
        counts = np.zeros(m - lookback + 1, dtype=np.int16)
        tmp = np.empty(m - lookback + 1, dtype=bool)
        for lag in range(1, lookback):
            np.less(width[lookback - 1 - lag : m - lag], cur, out=tmp)
            counts += tmp
        ok = run[lookback - 1 :] >= lookback
        rank[lookback - 1 :][ok] = counts[ok] / lookback
    if daily:
        out["cpr_pivot"], out["cpr_bc"], out["cpr_tc"] = pivot, bc, tc
        out["cpr_width_pct"], out["cpr_width_rank"] = width * 100.0, rank
        out["_session_bar_index"] = np.zeros(n, dtype=np.int64)
        return
    sess_of_bar = np.cumsum(new_sess) - 1
    out["cpr_pivot"] = pivot[sess_of_bar]
    out["cpr_bc"] = bc[sess_of_bar]
    out["cpr_tc"] = tc[sess_of_bar]
    out["cpr_width_pct"] = (width * 100.0)[sess_of_bar]
    out["cpr_width_rank"] = rank[sess_of_bar]
    out["_session_bar_index"] = np.arange(n) - s_start[sess_of_bar]


def compute_indicators(
    bars: pl.DataFrame, cpr_lookback: int = 20, keep: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Indicator arrays for ``bars`` sorted by series then ts, for the rows in ``keep``.

    A series is identified by ``sid`` if present, else by (symbol, timeframe). ``keep``
    (default: all rows) must select, within each series, a suffix: the rows to write.
    Indicators still run over the whole series, so kept values equal a full computation.
    Returns NaN in the warm-up, plus ``bar_index`` and ``session_bar_index``.
    """
    n = bars.height
    if n == 0:
        empty = {k: np.zeros(0) for k in INDICATORS}
        return {**empty, "bar_index": np.zeros(0, np.int64), "session_bar_index": np.zeros(0, np.int64)}
    keys = ["sid"] if "sid" in bars.columns else ["symbol", "timeframe"]
    changed = [(pl.col(k) != pl.col(k).shift(1)).fill_null(True) for k in keys]
    flags = bars.select(
        new_series=pl.any_horizontal(changed),
        new_date=(pl.col("session_date") != pl.col("session_date").shift(1)).fill_null(True),
    )
    new_series = flags["new_series"].to_numpy()
    new_sess = new_series | flags["new_date"].to_numpy()
    o, h, lo, c, v = (np.ascontiguousarray(bars[k].to_numpy(), dtype=np.float64) for k in BAR_COLUMNS)
    starts = np.flatnonzero(new_series)
    ends = np.append(starts[1:], n)
    series_id = np.cumsum(new_series) - 1
    if keep is None:
        keep_from = starts
        rows = np.arange(n)
    else:
        rows = np.flatnonzero(keep)
        first_kept = np.full(len(starts), -1)
        # first kept row per series (rows ascending, so the first occurrence wins)
        sids = series_id[rows]
        uniq, idx = np.unique(sids, return_index=True)
        first_kept[uniq] = rows[idx]
        keep_from = np.where(first_kept < 0, ends, first_kept)
    out = _talib(starts, ends, keep_from, o, h, lo, c, v)
    if len(rows) == 0:
        out.update({k: np.zeros(0) for k in CPR_COLUMNS})
        return {**out, "bar_index": np.zeros(0, np.int64), "session_bar_index": np.zeros(0, np.int64)}

    # CPR needs only the kept sessions plus `cpr_lookback` + 1 sessions before them
    cpr: dict[str, np.ndarray] = {}
    if keep is None:
        _cpr(cpr, new_series, new_sess, h, lo, c, cpr_lookback)
        out.update({k: cpr[k] for k in CPR_COLUMNS})
        out["session_bar_index"] = cpr["_session_bar_index"]
        out["bar_index"] = rows - starts[series_id]
        return out
    sess_id = np.cumsum(new_sess) - 1
    has_kept = keep_from < ends
    need_sess = np.full(len(starts), np.iinfo(np.int64).max)
    need_sess[has_kept] = sess_id[keep_from[has_kept]] - cpr_lookback - 1
    ctx = np.flatnonzero(sess_id >= need_sess[series_id])
    ctx_new_series = new_series[ctx].copy()
    ctx_new_series[0] = True
    ctx_new_series[1:] |= series_id[ctx][1:] != series_id[ctx][:-1]
    ctx_new_sess = ctx_new_series | new_sess[ctx]
    _cpr(cpr, ctx_new_series, ctx_new_sess, h[ctx], lo[ctx], c[ctx], cpr_lookback)
    pick = np.searchsorted(ctx, rows)  # kept rows inside the context rows
    for k in CPR_COLUMNS:
        out[k] = cpr[k][pick]
    out["session_bar_index"] = cpr["_session_bar_index"][pick]
    out["bar_index"] = rows - starts[series_id[rows]]
    return out


def model(dbt, session):
    dbt.config(
        materialized="incremental",
        incremental_strategy="delete+insert",
        unique_key=["symbol", "timeframe", "ts"],
        on_schema_change="append_new_columns",  # `adjustment` joined the table (issue 16)
    )
    meta = dbt.config.get("meta") or {}
    lookback = int(meta.get("cpr_lookback") or 20)
    adjustment = str(meta.get("price_adjustment") or "split")
    bars_sql = dbt.ref("int_bars_adjusted").sql_query()
    computed_at = _dt.datetime.now(_dt.UTC).replace(tzinfo=None)

    full = not dbt.is_incremental
    if not full:
        this = str(dbt.this)
        columns = {r[0] for r in session.execute(f"select * from {this} limit 0").description}
        # cpr_lookback changed in rules.yaml, or the price basis changed (or predates the
        # `adjustment` column): recompute everything
        full = "adjustment" not in columns or session.execute(
            f"select count(*) from {this} where cpr_lookback <> {lookback} "
            f"or adjustment is distinct from '{adjustment}'"
        ).fetchone()[0] > 0
    if full:
        scope_sql = f"select symbol, timeframe, min(ts) as from_ts from ({bars_sql}) b group by all"
    else:
        scope_sql = f"""
            select symbol, timeframe, min(ts) as from_ts from ({bars_sql}) b
            where ingested_at > (select coalesce(max(ingested_at), '-infinity'::timestamp) from {this})
            group by all"""
    session.execute(
        f"""create or replace temp table __int_indicators_scope as
            select row_number() over (order by symbol, timeframe) - 1 as sid, *
            from ({scope_sql}) x"""
    )
    scope = session.sql("select sid, symbol, timeframe from __int_indicators_scope order by sid").pl()
    # every bar of every series in scope (whole series: TA-Lib needs the full history), read
    # from the adjusted view once: its factor join is the costly part
    bars = session.sql(
        f"""select s.sid, b.ts, b.session_date, b.open, b.high, b.low, b.close, b.volume,
                   b.ingested_at, b.ts >= s.from_ts as keep
            from ({bars_sql}) b join __int_indicators_scope s using (symbol, timeframe)
            order by s.sid, b.ts"""
    ).pl()
    session.execute("drop table if exists __int_indicators_scope")
    keep = None
    if not full:  # only rows from each series' earliest new/changed bar on are written
        keep = bars["keep"].to_numpy()

    ind = compute_indicators(bars, lookback, keep)
    if keep is not None:
        bars = bars.filter(pl.Series(keep))
    names = scope.select("symbol", "timeframe")[pl.Series(bars["sid"])]
    return _to_arrow(pl.concat([names, bars], how="horizontal"), ind, lookback, computed_at, adjustment)


def _to_arrow(bars: pl.DataFrame, ind: dict[str, np.ndarray], lookback: int, computed_at,
              adjustment: str) -> pa.Table:
    """The output table; NaN (TA-Lib's warm-up) becomes NULL through a validity mask."""
    n = bars.height
    cols: dict[str, pa.Array] = {
        k: bars[k].to_arrow() for k in ("symbol", "timeframe", "ts", "session_date", *BAR_COLUMNS)
    }
    cols["bar_index"] = pa.array(ind["bar_index"], type=pa.int64())
    cols["session_bar_index"] = pa.array(ind["session_bar_index"], type=pa.int64())
    for k in INDICATORS:
        values = ind[k]
        cols[k] = pa.array(values, type=pa.float64(), mask=np.isnan(values))
    rank = ind["cpr_width_rank"]
    cols["cpr_narrow"] = pa.array(rank < 0.1, type=pa.bool_(), mask=np.isnan(rank))
    cols["cpr_lookback"] = pa.array(np.full(n, lookback, dtype=np.int32))
    cols["adjustment"] = pa.array([adjustment] * n, type=pa.string())
    cols["ingested_at"] = bars["ingested_at"].to_arrow()
    cols["computed_at"] = pa.array(np.full(n, np.datetime64(computed_at, "us")), type=pa.timestamp("us"))
    return pa.table(cols)
