
    
    



select symbol
from "w"."raw"."symbols"
where symbol is null


