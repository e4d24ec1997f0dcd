
    
    select
      count(*) as failures,
      count(*) != 0 as should_warn,
      count(*) != 0 as should_error
    from (
      
    
  
    
    

with all_values as (

    select
        timeframe as value_field,
        count(*) as n_records

    from "w"."staging"."stg_bars"
    group by timeframe

)

select *
from all_values
where value_field not in (
    '1m','5m','15m','30m','1h','1d'
)



  
  
      
    ) dbt_internal_test