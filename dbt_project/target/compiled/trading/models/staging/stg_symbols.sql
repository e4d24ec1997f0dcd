-- Symbol reference data; casts only.
select symbol::varchar as symbol,
       exchange::varchar as exchange,
       calendar::varchar as calendar,
       timezone::varchar as timezone,
       currency::varchar as currency,
       asset_class::varchar as asset_class,
       name::varchar as name,
       updated_at::timestamp as updated_at
from "w"."raw"."symbols"