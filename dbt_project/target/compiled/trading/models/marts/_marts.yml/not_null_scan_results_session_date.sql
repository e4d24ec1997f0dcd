
    
    



select session_date
from "w"."marts"."scan_results"
where session_date is null


