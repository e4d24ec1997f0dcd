
    
    



select symbol
from "w"."marts"."indicators_daily"
where symbol is null


