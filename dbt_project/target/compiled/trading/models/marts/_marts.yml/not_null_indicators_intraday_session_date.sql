
    
    



select session_date
from "w"."marts"."indicators_intraday"
where session_date is null


