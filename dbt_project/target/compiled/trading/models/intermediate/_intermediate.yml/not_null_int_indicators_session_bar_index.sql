
    
    



select session_bar_index
from "w"."intermediate"."int_indicators"
where session_bar_index is null


