
    
    



select timeframe
from "w"."marts"."scan_results"
where timeframe is null


