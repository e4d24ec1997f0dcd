-- Universe membership per session, for the scans naming a universe (rules.yaml `universe: NAME`).
-- The universes come from the var `universes` (trading_pipeline.marketdata.universes.dbt_spec:
-- each one's candidates, filters and fingerprint). One row per universe, candidate symbol and
-- session where its membership can change: every session it has a bar (daily or intraday) and
-- its delisting's ex-date. Between two rows nothing changes, so a symbol's state on any session
-- is its row of the latest session on or before it (`trading universe show` reads it so).
--
-- Point in time (DESIGN.md #5), every number from data up to the session only. `dropped_by` is
-- the first rule that drops the symbol, in this order (NULL: a member), the same codes and order
-- as universes.py `_verdict`:
--   delisted               a delisting whose ex-date is on or before the session
--   exchange_unknown       the universe names exchanges; neither the broker nor raw.symbols gives one
--   exchange               its exchange (the broker's, else raw.symbols) is not one of them
--   no_bars                no bar (daily or intraday) on or before the session
--   no_daily_bars          a price filter is set and no daily bar is on or before the session
--   min_price              the last daily close on or before the session is below min_price
--   min_avg_dollar_volume  avg(close x volume) of the last adv_window daily bars is below it
-- Prices are the raw (as traded) bars: a price floor judges the price the market saw then.
--
-- Incremental, like int_indicators: per universe, bars, delistings and symbol rows written after
-- the universe's `source_as_of` (the newest data its last build read) re-judge their symbol from
-- the earliest session they touch. The pre-hook first deletes every universe no scan names any
-- more and every universe whose spec (candidates, filters) changed: they are rebuilt whole.
{%- set universes = var('universes', []) %}
{%- set keep = [] %}
{%- for u in universes %}{% do keep.append("'" ~ u.name ~ "|" ~ u.fingerprint ~ "'") %}{% endfor %}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['universe', 'symbol', 'session_date'],
    pre_hook="{% if is_incremental() %}delete from {{ this }} where universe || '|' || universe_fingerprint not in ("
             ~ (keep | join(', ') or "''") ~ "){% else %}select 1{% endif %}"
) }}
with source_as_of as (  -- the newest data this build reads
  select greatest((select max(ingested_at) from {{ ref('stg_bars') }}),
                  (select max(loaded_at) from {{ ref('stg_corporate_actions') }}),
                  (select max(updated_at) from {{ ref('stg_symbols') }})) as as_of
),
delistings as (
  select symbol, min(ex_date) as delisted_on
  from {{ ref('stg_corporate_actions') }} where kind = 'delisting' group by symbol
),
exchanges as (
  select symbol, any_value(exchange) as exchange from {{ ref('stg_symbols') }} group by symbol
),
{%- for u in universes %}
{%- set i = loop.index %}
{%- if is_incremental() %}
{%- set wm = "coalesce((select max(source_as_of) from " ~ this ~ " where universe = '" ~ u.name ~ "'), timestamp '-infinity')" %}
{%- else %}
{%- set wm = "timestamp '-infinity'" %}
{%- endif %}
u{{ i }}_candidates as (  -- {{ u.name }}: symbol, exchange from the broker's list
  {%- if u.candidates is none %}
  select distinct symbol, null::varchar as exchange from {{ ref('stg_bars') }}
  {%- else %}
  {%- set rows = [] %}
  {%- for exch, symbols in u.candidates.items() %}
    {%- for sym in symbols %}
      {%- do rows.append("('" ~ sym | replace("'", "''") ~ "', " ~ ("'" ~ exch | replace("'", "''") ~ "'" if exch else "null") ~ ")") %}
    {%- endfor %}
  {%- endfor %}
  {%- if rows %}
  select symbol, exchange::varchar as exchange from (values {{ rows | join(', ') }}) c(symbol, exchange)
  {%- else %}
  select null::varchar as symbol, null::varchar as exchange where false
  {%- endif %}
  {%- endif %}
),
u{{ i }}_changed as (  -- per candidate, the first session to (re)judge
  select symbol, min(from_date) as from_date
  from (
    select symbol, session_date as from_date from {{ ref('stg_bars') }} where ingested_at > {{ wm }}
    union all
    select symbol, ex_date from {{ ref('stg_corporate_actions') }}
    where kind = 'delisting' and loaded_at > {{ wm }}
    union all
    select symbol, date '0001-01-01' from {{ ref('stg_symbols') }} where updated_at > {{ wm }}
  ) x
  where symbol in (select symbol from u{{ i }}_candidates)
  group by symbol
),
u{{ i }}_grid as (  -- its bar sessions and delisting ex-date, from the first one to judge
  select distinct g.symbol, g.session_date
  from (select symbol, session_date from {{ ref('stg_bars') }}
        union all
        select symbol, ex_date from {{ ref('stg_corporate_actions') }} where kind = 'delisting') g
  join u{{ i }}_changed ch on ch.symbol = g.symbol and g.session_date >= ch.from_date
),
u{{ i }}_first as (
  select symbol, min(session_date) as first_session from {{ ref('stg_bars') }}
  where symbol in (select symbol from u{{ i }}_changed) group by symbol
),
u{{ i }}_daily as (  -- each daily bar, with the average dollar volume of the last {{ u.adv_window }} daily bars
  select symbol, session_date as close_on, close,
         avg(close * volume) over w as avg_dollar_volume,
         count(*) over w as adv_sessions
  from {{ ref('stg_bars') }}
  where timeframe = '1d' and symbol in (select symbol from u{{ i }}_changed)
  window w as (partition by symbol order by session_date rows between {{ u.adv_window - 1 }} preceding and current row)
),
u{{ i }}_facts as (  -- what is known on each session: the latest daily bar on or before it
  select g.symbol, g.session_date, d.close as last_close, d.close_on, d.avg_dollar_volume, d.adv_sessions
  from u{{ i }}_grid g
  asof left join u{{ i }}_daily d on d.symbol = g.symbol and g.session_date >= d.close_on
),
u{{ i }}_judged as (
  select t.*, coalesce(c.exchange, x.exchange) as exchange,
         case when f.first_session <= t.session_date then f.first_session end as first_session,
         case when dl.delisted_on <= t.session_date then dl.delisted_on end as delisted_on
  from u{{ i }}_facts t
  join u{{ i }}_candidates c on c.symbol = t.symbol
  left join exchanges x on x.symbol = t.symbol
  left join u{{ i }}_first f on f.symbol = t.symbol
  left join delistings dl on dl.symbol = t.symbol
),
u{{ i }} as (
  select '{{ u.name }}' as universe, '{{ u.fingerprint }}' as universe_fingerprint, *,
         case
           when delisted_on is not null then 'delisted'
           {%- if u.exchanges %}
           when exchange is null then 'exchange_unknown'
           when upper(trim(exchange)) not in ({% for x in u.exchanges %}'{{ x | replace("'", "''") }}'{% if not loop.last %}, {% endif %}{% endfor %}) then 'exchange'
           {%- endif %}
           when first_session is null then 'no_bars'
           {%- if u.min_price is not none or u.min_avg_dollar_volume is not none %}
           when last_close is null then 'no_daily_bars'
           {%- endif %}
           {%- if u.min_price is not none %}
           when last_close < {{ u.min_price }} then 'min_price'
           {%- endif %}
           {%- if u.min_avg_dollar_volume is not none %}
           when avg_dollar_volume is null or avg_dollar_volume < {{ u.min_avg_dollar_volume }} then 'min_avg_dollar_volume'
           {%- endif %}
         end as dropped_by
  from u{{ i }}_judged
),
{%- endfor %}
judged as (
  select null::varchar as universe, null::varchar as universe_fingerprint, null::varchar as symbol,
         null::date as session_date, null::double as last_close, null::date as close_on,
         null::double as avg_dollar_volume, null::bigint as adv_sessions, null::varchar as exchange,
         null::date as first_session, null::date as delisted_on, null::varchar as dropped_by
  where false
  {%- for u in universes %}
  union all by name select * from u{{ loop.index }}
  {%- endfor %}
)
select universe, symbol, session_date, dropped_by is null as is_member, dropped_by, exchange,
       first_session, last_close, close_on, avg_dollar_volume, adv_sessions, delisted_on,
       universe_fingerprint, (select as_of from source_as_of) as source_as_of,
       now()::timestamp as computed_at
from judged
