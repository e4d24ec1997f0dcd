-- What each scan found per session: counts, the symbols ranked by score, the best one.
{{ config(materialized='view') }}
select scan, timeframe, session_date,
       count(*) as n_signals,
       count(*) filter (where direction = 'long') as n_long,
       count(*) filter (where direction = 'short') as n_short,
       string_agg(symbol, ',' order by score desc, symbol) as symbols,
       (list(symbol order by score desc, symbol))[1] as top_symbol,
       max(score) as top_score,
       max(as_of) as as_of
from {{ ref('signals') }}
group by scan, timeframe, session_date
