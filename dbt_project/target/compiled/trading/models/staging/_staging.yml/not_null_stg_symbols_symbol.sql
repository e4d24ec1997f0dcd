
    
    



select symbol
from "w"."staging"."stg_symbols"
where symbol is null


