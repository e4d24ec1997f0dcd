
select symbol, timeframe, ts, count(*) as n
from "w"."staging"."stg_bars"
group by symbol, timeframe, ts
having count(*) > 1
