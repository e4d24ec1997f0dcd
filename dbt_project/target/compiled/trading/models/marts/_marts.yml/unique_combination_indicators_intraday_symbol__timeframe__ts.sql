
select symbol, timeframe, ts, count(*) as n
from "w"."marts"."indicators_intraday"
group by symbol, timeframe, ts
having count(*) > 1
