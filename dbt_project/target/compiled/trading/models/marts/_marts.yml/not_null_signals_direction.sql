
    
    



select direction
from "w"."marts"."signals"
where direction is null


