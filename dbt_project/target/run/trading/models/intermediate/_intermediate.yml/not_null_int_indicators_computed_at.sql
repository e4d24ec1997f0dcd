
    
    select
      count(*) as failures,
      count(*) != 0 as should_warn,
      count(*) != 0 as should_error
    from (
      
    
  
    
    



select computed_at
from "w"."intermediate"."int_indicators"
where computed_at is null



  
  
      
    ) dbt_internal_test