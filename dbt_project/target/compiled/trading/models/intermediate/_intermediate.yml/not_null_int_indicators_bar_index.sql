
    
    



select bar_index
from "w"."intermediate"."int_indicators"
where bar_index is null


