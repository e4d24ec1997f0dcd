
    
    select
      count(*) as failures,
      count(*) != 0 as should_warn,
      count(*) != 0 as should_error
    from (
      
    
  
    
    



select scan
from "w"."marts"."alerts"
where scan is null



  
  
      
    ) dbt_internal_test