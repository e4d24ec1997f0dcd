
    
    select
      count(*) as failures,
      count(*) != 0 as should_warn,
      count(*) != 0 as should_error
    from (
      
    
  
select scan, timeframe, session_date, count(*) as n
from "w"."marts"."scan_results"
group by scan, timeframe, session_date
having count(*) > 1

  
  
      
    ) dbt_internal_test