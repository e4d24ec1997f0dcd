
  
  create view "w"."marts"."alerts__dbt_tmp" as (
    -- Signals worth notifying: score at or above the scan's alert_min_score (rules.yaml).
-- alert_id is stable (a hash of the signal key), so re-running a scan never re-alerts.

select md5(concat_ws('|', scan, symbol, timeframe, strftime(ts, '%Y-%m-%dT%H:%M:%S'), kind)) as alert_id,
       scan, symbol, timeframe, ts, session_date, kind, direction, score, reason,
       printf('%s %s %s', symbol, replace(kind, '_', ' '), strftime(ts, '%Y-%m-%d %H:%M')) as title,
       as_of
from "w"."marts"."signals"
where false
   or (scan = 'breakout_daily' and score >= 1.0)
   or (scan = 'crp_daily' and score >= 70.0)
  );
