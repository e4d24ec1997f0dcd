
    
    



select reason
from "w"."marts"."signals"
where reason is null


