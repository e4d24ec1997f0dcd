
    
    



select scan
from "w"."marts"."alerts"
where scan is null


