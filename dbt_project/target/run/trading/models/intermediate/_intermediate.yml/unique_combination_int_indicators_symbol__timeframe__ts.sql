
    
    select
      count(*) as failures,
      count(*) != 0 as should_warn,
      count(*) != 0 as should_error
    from (
      
    
  
select symbol, timeframe, ts, count(*) as n
from "w"."intermediate"."int_indicators"
group by symbol, timeframe, ts
having count(*) > 1

  
  
      
    ) dbt_internal_test