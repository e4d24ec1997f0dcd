
    
    select
      count(*) as failures,
      count(*) != 0 as should_warn,
      count(*) != 0 as should_error
    from (
      
    
  
select symbol, timeframe, ts, count(*) as n
from "w"."marts"."indicators_intraday"
group by symbol, timeframe, ts
having count(*) > 1

  
  
      
    ) dbt_internal_test