-- Every symbol with reference data (when known), the bars the warehouse holds for it, and its
-- life as corporate actions tell it: listed (first bar), delisted (a delisting's ex-date: the
-- first session it no longer trades), renamed from / to (symbol changes).
{{ config(materialized='table') }}
with bar_stats as (
  select symbol,
         min(session_date) as first_session,
         max(session_date) as last_session,
         count(*) filter (where timeframe = '1d') as n_daily_bars,
         count(*) filter (where timeframe <> '1d') as n_intraday_bars,
         string_agg(distinct timeframe, ',' order by timeframe) as timeframes
  from {{ ref('stg_bars') }}
  group by symbol
),
life as (
  select symbol,
         min(ex_date) filter (where kind = 'delisting') as delisted_on,
         arg_max(new_symbol, ex_date) filter (where kind = 'symbol_change') as renamed_to,
         max(ex_date) filter (where kind = 'symbol_change') as renamed_on
  from {{ ref('stg_corporate_actions') }}
  group by symbol
),
renamed_from as (
  select new_symbol as symbol, arg_max(symbol, ex_date) as renamed_from
  from {{ ref('stg_corporate_actions') }}
  where kind = 'symbol_change'
  group by new_symbol
),
symbols as (
select coalesce(s.symbol, b.symbol) as symbol,
       s.exchange, s.calendar, coalesce(s.timezone, 'America/New_York') as timezone,
       s.currency, s.asset_class, s.name,
       b.first_session, b.last_session,
       coalesce(b.n_daily_bars, 0) as n_daily_bars,
       coalesce(b.n_intraday_bars, 0) as n_intraday_bars,
       b.timeframes
from {{ ref('stg_symbols') }} s
full outer join bar_stats b on b.symbol = s.symbol
)
select y.*, y.first_session as listed_on, l.delisted_on, l.renamed_to, l.renamed_on, r.renamed_from,
       l.delisted_on is null as active
from symbols y
left join life l on l.symbol = y.symbol
left join renamed_from r on r.symbol = y.symbol
