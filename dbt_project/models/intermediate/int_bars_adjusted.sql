-- Every bar (daily and intraday) in the price basis the platform computes on: the dbt var
-- `price_adjustment` (setting TRADING_PRICE_ADJUSTMENT): `split` (default), `total_return`
-- (splits and dividends) or `none` (raw). Raw bars stay in raw.bars_*; this view multiplies
-- by int_adjustment_factors. `ingested_at` is the later of the bar's own and the newest
-- action that adjusts it, so a new action re-adjusts (re-computes) the history before it.
{{ config(materialized='view') }}
{%- set adjustment = var('price_adjustment', 'split') %}
{%- if adjustment not in ('split', 'total_return', 'none') %}
  {{ exceptions.raise_compiler_error("price_adjustment must be split, total_return or none (TRADING_PRICE_ADJUSTMENT), not " ~ adjustment) }}
{%- endif %}
{%- set price_factor = {'split': 'f.split_price_factor', 'total_return': 'f.total_return_price_factor', 'none': '1.0'}[adjustment] %}
{%- set volume_factor = '1.0' if adjustment == 'none' else 'f.volume_factor' %}
select b.symbol, b.timeframe, b.ts, b.session_date,
       b.open * coalesce({{ price_factor }}, 1.0) as open,
       b.high * coalesce({{ price_factor }}, 1.0) as high,
       b.low * coalesce({{ price_factor }}, 1.0) as low,
       b.close * coalesce({{ price_factor }}, 1.0) as close,
       b.volume * coalesce({{ volume_factor }}, 1.0) as volume,
       b.source,
       {%- if adjustment == 'none' %}
       b.ingested_at,
       {%- else %}
       greatest(b.ingested_at, coalesce(f.known_at, b.ingested_at)) as ingested_at,
       {%- endif %}
       '{{ adjustment }}' as adjustment
from {{ ref('stg_bars') }} b
left join {{ ref('int_adjustment_factors') }} f
  on f.symbol = b.symbol
 and b.session_date < f.valid_to
 and (f.valid_from is null or b.session_date >= f.valid_from)
