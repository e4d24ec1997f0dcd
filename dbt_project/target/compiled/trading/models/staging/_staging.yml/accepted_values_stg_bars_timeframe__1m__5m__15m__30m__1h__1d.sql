
    
    

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


