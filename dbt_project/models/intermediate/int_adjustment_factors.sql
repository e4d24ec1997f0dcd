-- Price and volume multipliers per symbol and date range, from splits and dividends.
--
-- A bar on session d is adjusted by every action of its symbol with ex_date > d (backward
-- adjustment, as data vendors publish: the newest prices are the traded ones):
--   split (ratio r new shares per old): price x 1/r, volume x r;
--   dividend (amount D per share), total-return adjustment only: price x (1 - D / C), C the
--     raw close of the last session before the ex-date (the CRSP / vendor "Adj Close" rule).
-- One row per symbol and interval [valid_from, valid_to) between consecutive ex-dates, with
-- the product of the multipliers of every action at or after valid_to; bars on or after the
-- newest ex-date are unadjusted (no row).
--
-- An action takes effect once the warehouse holds a daily bar on or after its ex-date (an
-- announced split does not move today's prices). `known_at` = when that became true (the later
-- of the action's load and that bar's ingestion): int_bars_adjusted stamps every bar it adjusts
-- with it, so int_indicators' incremental build sees the series as changed and re-adjusts its
-- whole history (incremental == full). A dividend that is not below the previous close is
-- ignored (no meaningful factor) rather than inverting prices.
{{ config(materialized='table') }}
with actions as (
  select a.symbol, a.ex_date, a.kind, a.ratio, a.amount, a.loaded_at
  from {{ ref('stg_corporate_actions') }} a
  where a.kind in ('split', 'dividend')
),
effective as (
  -- the first daily bar on or after the ex-date (an ASOF join: smallest such session)
  select a.*, f.ingested_at as effective_bar_ingested_at
  from actions a
  asof join {{ source('raw', 'bars_daily') }} f
    on a.symbol = f.symbol and a.ex_date <= f.session_date
),
priced as (
  -- the raw close of the last session before the ex-date (for dividends)
  select e.*, p.close as prev_close
  from effective e
  asof left join {{ source('raw', 'bars_daily') }} p
    on e.symbol = p.symbol and e.ex_date > p.session_date
),
per_date as (
  select symbol, ex_date,
         coalesce(product(1.0 / ratio) filter (where kind = 'split'), 1.0) as split_price,
         coalesce(product(ratio) filter (where kind = 'split'), 1.0) as split_volume,
         coalesce(product(1.0 - amount / prev_close)
                  filter (where kind = 'dividend' and prev_close > amount), 1.0) as dividend_price,
         max(greatest(loaded_at, effective_bar_ingested_at)) as known_at
  from priced
  group by symbol, ex_date
)
select symbol,
       lag(ex_date) over (partition by symbol order by ex_date) as valid_from,
       ex_date as valid_to,
       product(split_price) over later as split_price_factor,
       product(split_volume) over later as volume_factor,
       product(split_price * dividend_price) over later as total_return_price_factor,
       max(known_at) over later as known_at
from per_date
window later as (partition by symbol order by ex_date desc rows between unbounded preceding and current row)
