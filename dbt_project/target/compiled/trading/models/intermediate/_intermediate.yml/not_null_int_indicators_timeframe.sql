
    
    



select timeframe
from "w"."intermediate"."int_indicators"
where timeframe is null


