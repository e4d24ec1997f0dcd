
    
    



select ts
from "w"."marts"."indicators_daily"
where ts is null


