
    
    



select ts
from "w"."marts"."signals"
where ts is null


