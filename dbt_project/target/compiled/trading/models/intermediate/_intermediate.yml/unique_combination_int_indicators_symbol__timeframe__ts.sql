
select symbol, timeframe, ts, count(*) as n
from "w"."intermediate"."int_indicators"
group by symbol, timeframe, ts
having count(*) > 1
