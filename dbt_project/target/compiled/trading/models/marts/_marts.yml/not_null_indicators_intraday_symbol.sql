
    
    



select symbol
from "w"."marts"."indicators_intraday"
where symbol is null


