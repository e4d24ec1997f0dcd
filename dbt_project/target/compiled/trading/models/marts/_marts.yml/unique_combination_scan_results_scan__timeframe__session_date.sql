
select scan, timeframe, session_date, count(*) as n
from "w"."marts"."scan_results"
group by scan, timeframe, session_date
having count(*) > 1
