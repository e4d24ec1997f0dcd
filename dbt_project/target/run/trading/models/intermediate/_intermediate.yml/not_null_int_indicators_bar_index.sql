
    
    select
      count(*) as failures,
      count(*) != 0 as should_warn,
      count(*) != 0 as should_error
    from (
      
    
  
    
    



select bar_index
from "w"."intermediate"."int_indicators"
where bar_index is null



  
  
      
    ) dbt_internal_test