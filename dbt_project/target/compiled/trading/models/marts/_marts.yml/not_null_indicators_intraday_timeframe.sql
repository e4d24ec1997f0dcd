
    
    



select timeframe
from "w"."marts"."indicators_intraday"
where timeframe is null


