
    
    select
      count(*) as failures,
      count(*) != 0 as should_warn,
      count(*) != 0 as should_error
    from (
      
    
  
    
    



select timeframe
from "w"."marts"."indicators_intraday"
where timeframe is null



  
  
      
    ) dbt_internal_test