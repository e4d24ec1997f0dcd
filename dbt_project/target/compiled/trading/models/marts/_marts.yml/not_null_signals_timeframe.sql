
    
    



select timeframe
from "w"."marts"."signals"
where timeframe is null


