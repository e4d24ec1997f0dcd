
select symbol, ts, count(*) as n
from "w"."marts"."indicators_daily"
group by symbol, ts
having count(*) > 1
