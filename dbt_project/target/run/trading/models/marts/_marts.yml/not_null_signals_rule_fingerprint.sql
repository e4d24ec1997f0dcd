
    
    select
      count(*) as failures,
      count(*) != 0 as should_warn,
      count(*) != 0 as should_error
    from (
      
    
  
    
    



select rule_fingerprint
from "w"."marts"."signals"
where rule_fingerprint is null



  
  
      
    ) dbt_internal_test