
    
    



select symbol
from "w"."marts"."alerts"
where symbol is null


