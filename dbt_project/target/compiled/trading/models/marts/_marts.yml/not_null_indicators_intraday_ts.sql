
    
    



select ts
from "w"."marts"."indicators_intraday"
where ts is null


