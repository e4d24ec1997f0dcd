
    
    



select score
from "w"."marts"."signals"
where score is null


