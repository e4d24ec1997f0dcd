
    

    create  table
      "w"."marts"."dim_symbols__dbt_tmp"
  
    
    as (
      -- Every symbol with reference data (when known) and the bars the warehouse holds for it.

with bar_stats as (
  select symbol,
         min(session_date) as first_session,
         max(session_date) as last_session,
         count(*) filter (where timeframe = '1d') as n_daily_bars,
         count(*) filter (where timeframe <> '1d') as n_intraday_bars,
         string_agg(distinct timeframe, ',' order by timeframe) as timeframes
  from "w"."staging"."stg_bars"
  group by symbol
)
select coalesce(s.symbol, b.symbol) as symbol,
       s.exchange, s.calendar, coalesce(s.timezone, 'America/New_York') as timezone,
       s.currency, s.asset_class, s.name,
       b.first_session, b.last_session,
       coalesce(b.n_daily_bars, 0) as n_daily_bars,
       coalesce(b.n_intraday_bars, 0) as n_intraday_bars,
       b.timeframes
from "w"."staging"."stg_symbols" s
full outer join bar_stats b on b.symbol = s.symbol
    );
    
  