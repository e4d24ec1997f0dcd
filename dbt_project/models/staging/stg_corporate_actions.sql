-- Corporate actions as loaded (`trading actions load`); casts only. Raw bars stay raw: the
-- adjustment factors built from these (int_adjustment_factors) are applied in int_bars_adjusted.
select symbol::varchar as symbol,
       ex_date::date as ex_date,
       kind::varchar as kind,
       ratio::double as ratio,
       amount::double as amount,
       new_symbol::varchar as new_symbol,
       pay_date::date as pay_date,
       source::varchar as source,
       loaded_at::timestamp as loaded_at
from {{ source('raw', 'corporate_actions') }}
