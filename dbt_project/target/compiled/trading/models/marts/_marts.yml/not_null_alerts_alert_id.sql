
    
    



select alert_id
from "w"."marts"."alerts"
where alert_id is null


