
  
  create view "w"."staging"."stg_bars__dbt_tmp" as (
    -- All bars, daily and intraday, one row per (symbol, timeframe, ts); casts only.
select symbol::varchar as symbol,
       timeframe::varchar as timeframe,
       ts::timestamp as ts,
       session_date::date as session_date,
       open::double as open,
       high::double as high,
       low::double as low,
       close::double as close,
       volume::double as volume,
       source::varchar as source,
       ingested_at::timestamp as ingested_at
from "w"."raw"."bars_daily"
union all
select symbol::varchar, timeframe::varchar, ts::timestamp, session_date::date,
       open::double, high::double, low::double, close::double, volume::double,
       source::varchar, ingested_at::timestamp
from "w"."raw"."bars_intraday"
  );
