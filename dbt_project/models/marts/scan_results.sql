-- What each scan found per session: counts, the symbols ranked by score (each once, at its
-- best score: an intraday scan can fire on several bars of one symbol), the best one.
{{ config(materialized='view') }}
with per_symbol as (
  select scan, timeframe, session_date, symbol, max(score) as best_score
  from {{ ref('signals') }}
  group by scan, timeframe, session_date, symbol
),
ranked as (
  select scan, timeframe, session_date,
         string_agg(symbol, ',' order by best_score desc, symbol) as symbols,
         (list(symbol order by best_score desc, symbol))[1] as top_symbol
  from per_symbol
  group by scan, timeframe, session_date
)
select s.scan, s.timeframe, s.session_date,
       count(*) as n_signals,
       count(*) filter (where s.direction = 'long') as n_long,
       count(*) filter (where s.direction = 'short') as n_short,
       any_value(r.symbols) as symbols,
       any_value(r.top_symbol) as top_symbol,
       max(s.score) as top_score,
       max(s.as_of) as as_of
from {{ ref('signals') }} s
join ranked r using (scan, timeframe, session_date)
group by s.scan, s.timeframe, s.session_date
