
    
    



select kind
from "w"."marts"."signals"
where kind is null


