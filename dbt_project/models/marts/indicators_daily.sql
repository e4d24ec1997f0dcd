-- Daily bars (split-adjusted by default: column adjustment) with every indicator, one row per symbol and session date.
-- A view: the rows are stored once, in the incremental int_indicators.
{{ config(materialized='view') }}
select symbol, ts, session_date, open, high, low, close, volume,
       sma_20, sma_50, sma_200, ema_12, ema_26, rsi_14, macd, macd_signal, macd_hist,
       bb_upper, bb_middle, bb_lower, atr_14, volume_avg_20,
       cpr_pivot, cpr_bc, cpr_tc, cpr_width_pct, cpr_narrow,
       adjustment, computed_at
from {{ ref('int_indicators') }}
where timeframe = '1d'
