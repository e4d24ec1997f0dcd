
    
    select
      count(*) as failures,
      count(*) != 0 as should_warn,
      count(*) != 0 as should_error
    from (
      
    
  
    
    



select timeframe
from "w"."marts"."signals"
where timeframe is null



  
  
      
    ) dbt_internal_test