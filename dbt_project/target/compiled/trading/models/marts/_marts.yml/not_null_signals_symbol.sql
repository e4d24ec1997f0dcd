
    
    



select symbol
from "w"."marts"."signals"
where symbol is null


