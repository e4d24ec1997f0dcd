
    
    



select session_date
from "w"."staging"."stg_bars"
where session_date is null


