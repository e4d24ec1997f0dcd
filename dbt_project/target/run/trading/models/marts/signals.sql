
    

    create  table
      "w"."marts"."signals"
  
    
    as (
      -- One row per scan, symbol, timeframe, bar and signal kind, with a score and a
-- human-readable reason. Scans come from rules.yaml (var `scans`); definitions are in
-- macros/signals.sql. Point in time: a signal at bar t reads only bars <= t.

with 
scope_wm as (
  select null::timestamp as wm
),
scope_fresh as (
  select null::varchar as scan, null::varchar as rule_fingerprint where false
),
scope_changed as (
  select symbol, timeframe, ts, session_date, bar_index
  from "w"."intermediate"."int_indicators"
  where (select wm from scope_wm) is null or computed_at > (select wm from scope_wm)
),
scope_series as (
  select symbol, timeframe, min(bar_index) as from_index, min(ts) as from_ts
  from scope_changed group by all
),
scope_sessions as (
  select distinct timeframe, session_date from scope_changed
)
,
scan_1_base as (
  select ind.symbol, ind.timeframe, ind.ts, ind.session_date, ind.high, ind.low, ind.close,
         ind.volume, ind.volume_avg_20, ind.atr_14, ind.bar_index,
         case when (not exists (select 1 from scope_fresh f where f.scan = 'breakout_daily' and f.rule_fingerprint = 'd3dea9b4ff5811a2')) then 0 else cs.from_index end as from_index
  from "w"."intermediate"."int_indicators" ind
  left join scope_series cs on cs.symbol = ind.symbol and cs.timeframe = ind.timeframe
  where ind.timeframe in ('1d')
    and ((not exists (select 1 from scope_fresh f where f.scan = 'breakout_daily' and f.rule_fingerprint = 'd3dea9b4ff5811a2')) or ind.bar_index >= cs.from_index - 20)
),
scan_1_win as (
  select *,
         max(high) over w as level_high,
         min(low) over w as level_low,
         count(*) over w as n_prior
  from scan_1_base
  window w as (partition by symbol, timeframe order by ts
               rows between 20 preceding and 1 preceding)
),
scan_1_hits as (
  select *, close > level_high as is_up
  from scan_1_win
  where bar_index >= from_index
    and n_prior = 20
    and atr_14 > 0 and volume_avg_20 > 0
    and volume >= 1.5 * volume_avg_20
    and (close > level_high or close < level_low)
    
),
scan_1 as (
  select 'breakout_daily' as scan, symbol, timeframe, ts, session_date,
         case when is_up then 'breakout_up' else 'breakout_down' end as kind,
         case when is_up then 'long' else 'short' end as direction,
         case when is_up then (close - level_high) / atr_14 else (level_low - close) / atr_14 end as score,
         printf('close %.2f %s %d-bar %s %.2f on %.1fx volume',
                close, case when is_up then 'above' else 'below' end, 20,
                case when is_up then 'high' else 'low' end,
                case when is_up then level_high else level_low end,
                volume / volume_avg_20) as reason,
         close,
         case when is_up then level_high else level_low end as level,
         'd3dea9b4ff5811a2' as rule_fingerprint
  from scan_1_hits
  where (case when is_up then (close - level_high) / atr_14 else (level_low - close) / atr_14 end) >= 0.0
)
,
scan_2_base as (
  select ind.symbol, ind.timeframe, ind.ts, ind.session_date, ind.high, ind.low, ind.close,
         ind.volume, ind.volume_avg_20, ind.atr_14, ind.bar_index,
         case when (not exists (select 1 from scope_fresh f where f.scan = 'breakout_intraday' and f.rule_fingerprint = '13b6e8375735d69f')) then 0 else cs.from_index end as from_index
  from "w"."intermediate"."int_indicators" ind
  left join scope_series cs on cs.symbol = ind.symbol and cs.timeframe = ind.timeframe
  where ind.timeframe in ('1m', '5m', '15m', '30m', '1h')
    and ((not exists (select 1 from scope_fresh f where f.scan = 'breakout_intraday' and f.rule_fingerprint = '13b6e8375735d69f')) or ind.bar_index >= cs.from_index - 20)
),
scan_2_win as (
  select *,
         max(high) over w as level_high,
         min(low) over w as level_low,
         count(*) over w as n_prior
  from scan_2_base
  window w as (partition by symbol, timeframe order by ts
               rows between 20 preceding and 1 preceding)
),
scan_2_hits as (
  select *, close > level_high as is_up
  from scan_2_win
  where bar_index >= from_index
    and n_prior = 20
    and atr_14 > 0 and volume_avg_20 > 0
    and volume >= 1.5 * volume_avg_20
    and (close > level_high or close < level_low)
    
),
scan_2 as (
  select 'breakout_intraday' as scan, symbol, timeframe, ts, session_date,
         case when is_up then 'breakout_up' else 'breakout_down' end as kind,
         case when is_up then 'long' else 'short' end as direction,
         case when is_up then (close - level_high) / atr_14 else (level_low - close) / atr_14 end as score,
         printf('close %.2f %s %d-bar %s %.2f on %.1fx volume',
                close, case when is_up then 'above' else 'below' end, 20,
                case when is_up then 'high' else 'low' end,
                case when is_up then level_high else level_low end,
                volume / volume_avg_20) as reason,
         close,
         case when is_up then level_high else level_low end as level,
         '13b6e8375735d69f' as rule_fingerprint
  from scan_2_hits
  where (case when is_up then (close - level_high) / atr_14 else (level_low - close) / atr_14 end) >= 0.0
)
,
scan_3_bars as (
  select symbol, timeframe, ts, session_date, open, high, low, close, volume
  from "w"."intermediate"."int_indicators" ind
  where timeframe in ('1d')
    and ((not exists (select 1 from scope_fresh f where f.scan = 'crp_daily' and f.rule_fingerprint = 'b39e1d53d4480641')) or exists (select 1 from scope_sessions ss
         where ss.timeframe = ind.timeframe and ss.session_date = ind.session_date))
),
scan_3_feat as (
  select *,
         case when high = low then 0.5 else (close - low) / (high - low) end as cp,
         (high - low) / close as rng,
         (close - open) / open as chg,
         case when (high - low) / close <= 0.03 then 1.0
              when (high - low) / close <= 0.045 then 0.67 else 0.17 end as range_part,
         case when volume > 75000 then 1.0 when volume > 50000 then 0.75
              when volume > 25000 then 0.5 else 0.25 end as volume_part
  from scan_3_bars
  where close > 0 and open > 0
     and close >= 50.0 and close <= 2000.0 and volume >= 50000.0 and volume <= 5000000.0
),
scan_3_scored as (
  select *,
         100 * (0.4 * case when cp >= 0.98 then 1.0 else 0.25 end + 0.3 * range_part + 0.2 * volume_part
                + 0.1 * case when chg > 0.01 then 1.0 when chg > 0 then 0.5 else 0.2 end) as score_long,
         100 * (0.4 * case when cp <= 0.02 then 1.0 else 0.25 end + 0.3 * range_part + 0.2 * volume_part
                + 0.1 * case when chg < -0.01 then 1.0 when chg < 0 then 0.5 else 0.2 end) as score_short
  from scan_3_feat
),
scan_3_ranked as (
  select *, greatest(score_long, score_short) as score, score_long >= score_short as is_long,
         row_number() over (partition by timeframe, session_date
                            order by greatest(score_long, score_short) desc, symbol) as rank_in_session
  from scan_3_scored
  where greatest(score_long, score_short) >= 30.0
),
scan_3 as (
  select 'crp_daily' as scan, symbol, timeframe, ts, session_date,
         case when is_long then 'crp_long' else 'crp_short' end as kind,
         case when is_long then 'long' else 'short' end as direction,
         score,
         printf('%s CRP score %.0f (#%d of session): close at %.0f%% of range, range %.2f%%, volume %.0f, change %+.2f%%',
                case when is_long then 'long' else 'short' end, score, rank_in_session,
                cp * 100, rng * 100, volume, chg * 100) as reason,
         close,
         null::double as level,
         'b39e1d53d4480641' as rule_fingerprint
  from scan_3_ranked
  where rank_in_session <= 3
)
,
scan_4_bars as (
  select symbol, timeframe, max(ts) as ts, session_date,
         arg_min(open, ts) as open, max(high) as high, min(low) as low,
         arg_max(close, ts) as close, sum(volume) as volume
  from (
    select ind.*, timezone(coalesce(sy.timezone, 'America/New_York'), timezone('UTC', ind.ts))
                  + to_minutes(case ind.timeframe when '1m' then 1 when '5m' then 5 when '15m' then 15
                                  when '30m' then 30 when '1h' then 60 else 0 end) as local_end
    from "w"."intermediate"."int_indicators" ind
    left join "w"."staging"."stg_symbols" sy on sy.symbol = ind.symbol
    where ind.timeframe in ('1m', '5m', '15m', '30m', '1h')
      and ((not exists (select 1 from scope_fresh f where f.scan = 'crp_intraday' and f.rule_fingerprint = 'b5ec26a1ab28da36')) or exists (select 1 from scope_sessions ss
           where ss.timeframe = ind.timeframe and ss.session_date = ind.session_date))
  ) b
  where local_end <= session_date + time '10:30:00'
  group by symbol, timeframe, session_date
),
scan_4_feat as (
  select *,
         case when high = low then 0.5 else (close - low) / (high - low) end as cp,
         (high - low) / close as rng,
         (close - open) / open as chg,
         case when (high - low) / close <= 0.03 then 1.0
              when (high - low) / close <= 0.045 then 0.67 else 0.17 end as range_part,
         case when volume > 75000 then 1.0 when volume > 50000 then 0.75
              when volume > 25000 then 0.5 else 0.25 end as volume_part
  from scan_4_bars
  where close > 0 and open > 0
     and close >= 50.0 and close <= 2000.0 and volume >= 50000.0 and volume <= 5000000.0
),
scan_4_scored as (
  select *,
         100 * (0.4 * case when cp >= 0.98 then 1.0 else 0.25 end + 0.3 * range_part + 0.2 * volume_part
                + 0.1 * case when chg > 0.01 then 1.0 when chg > 0 then 0.5 else 0.2 end) as score_long,
         100 * (0.4 * case when cp <= 0.02 then 1.0 else 0.25 end + 0.3 * range_part + 0.2 * volume_part
                + 0.1 * case when chg < -0.01 then 1.0 when chg < 0 then 0.5 else 0.2 end) as score_short
  from scan_4_feat
),
scan_4_ranked as (
  select *, greatest(score_long, score_short) as score, score_long >= score_short as is_long,
         row_number() over (partition by timeframe, session_date
                            order by greatest(score_long, score_short) desc, symbol) as rank_in_session
  from scan_4_scored
  where greatest(score_long, score_short) >= 30.0
),
scan_4 as (
  select 'crp_intraday' as scan, symbol, timeframe, ts, session_date,
         case when is_long then 'crp_long' else 'crp_short' end as kind,
         case when is_long then 'long' else 'short' end as direction,
         score,
         printf('%s CRP score %.0f (#%d of session): close at %.0f%% of range, range %.2f%%, volume %.0f, change %+.2f%%',
                case when is_long then 'long' else 'short' end, score, rank_in_session,
                cp * 100, rng * 100, volume, chg * 100) as reason,
         close,
         null::double as level,
         'b5ec26a1ab28da36' as rule_fingerprint
  from scan_4_ranked
  where rank_in_session <= 3
)
,
scan_5 as (
  select 'cpr_narrow_daily' as scan, ind.symbol, ind.timeframe, ind.ts, ind.session_date,
         'cpr_narrow' as kind, 'neutral' as direction,
         100 * (1 - ind.cpr_width_rank) as score,
         printf('CPR width %.3f%% is narrower than %.0f%% of the last %d sessions (pivot %.2f, bc %.2f, tc %.2f)',
                ind.cpr_width_pct, 100 * (1 - ind.cpr_width_rank), ind.cpr_lookback,
                ind.cpr_pivot, ind.cpr_bc, ind.cpr_tc) as reason,
         ind.close,
         ind.cpr_pivot as level,
         '730eea60e87ce31b' as rule_fingerprint
  from "w"."intermediate"."int_indicators" ind
  left join scope_series cs on cs.symbol = ind.symbol and cs.timeframe = ind.timeframe
  where ind.timeframe in ('1d')
    and ind.cpr_narrow
    and ind.session_bar_index = 0
    and ((not exists (select 1 from scope_fresh f where f.scan = 'cpr_narrow_daily' and f.rule_fingerprint = '730eea60e87ce31b')) or ind.bar_index >= cs.from_index)
    and 100 * (1 - ind.cpr_width_rank) >= 0.0
    
)
,
all_scans as (
  select null::varchar as scan, null::varchar as symbol, null::varchar as timeframe,
         null::timestamp as ts, null::date as session_date, null::varchar as kind,
         null::varchar as direction, null::double as score, null::varchar as reason,
         null::double as close, null::double as level, null::varchar as rule_fingerprint
  where false
  union all select * from scan_1
  union all select * from scan_2
  union all select * from scan_3
  union all select * from scan_4
  union all select * from scan_5
)
select scan, symbol, timeframe, ts, session_date, kind, direction,
       score::double as score, reason, close, level, rule_fingerprint,
       (select max(computed_at) from "w"."intermediate"."int_indicators") as as_of
from all_scans
    );
    
  
  