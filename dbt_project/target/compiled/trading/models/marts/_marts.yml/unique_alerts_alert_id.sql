
    
    

select
    alert_id as unique_field,
    count(*) as n_records

from "w"."marts"."alerts"
where alert_id is not null
group by alert_id
having count(*) > 1


