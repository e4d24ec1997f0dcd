
    
    select
      count(*) as failures,
      count(*) != 0 as should_warn,
      count(*) != 0 as should_error
    from (
      
    
  
select scan, symbol, timeframe, ts, kind, count(*) as n
from "w"."marts"."signals"
group by scan, symbol, timeframe, ts, kind
having count(*) > 1

  
  
      
    ) dbt_internal_test