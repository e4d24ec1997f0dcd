
    
    



select symbol
from "w"."intermediate"."int_indicators"
where symbol is null


