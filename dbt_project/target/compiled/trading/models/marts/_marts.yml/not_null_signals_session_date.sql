
    
    



select session_date
from "w"."marts"."signals"
where session_date is null


