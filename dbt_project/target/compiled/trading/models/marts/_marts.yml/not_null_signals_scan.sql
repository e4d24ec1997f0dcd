
    
    



select scan
from "w"."marts"."signals"
where scan is null


