
    
    



select session_date
from "w"."intermediate"."int_indicators"
where session_date is null


