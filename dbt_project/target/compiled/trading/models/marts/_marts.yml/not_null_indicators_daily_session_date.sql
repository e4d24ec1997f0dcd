
    
    



select session_date
from "w"."marts"."indicators_daily"
where session_date is null


