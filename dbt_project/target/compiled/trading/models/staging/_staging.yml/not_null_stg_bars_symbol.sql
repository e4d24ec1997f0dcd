
    
    



select symbol
from "w"."staging"."stg_bars"
where symbol is null


