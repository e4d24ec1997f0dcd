
    
    

with all_values as (

    select
        kind as value_field,
        count(*) as n_records

    from "w"."marts"."signals"
    group by kind

)

select *
from all_values
where value_field not in (
    'breakout_up','breakout_down','crp_long','crp_short','cpr_narrow'
)


