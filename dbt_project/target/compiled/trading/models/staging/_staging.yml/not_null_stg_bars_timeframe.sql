
    
    



select timeframe
from "w"."staging"."stg_bars"
where timeframe is null


