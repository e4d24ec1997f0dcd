
    
    



select symbol
from "w"."marts"."dim_symbols"
where symbol is null


