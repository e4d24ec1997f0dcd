
select scan, symbol, timeframe, ts, kind, count(*) as n
from "w"."marts"."signals"
group by scan, symbol, timeframe, ts, kind
having count(*) > 1
