
    
    



select computed_at
from "w"."intermediate"."int_indicators"
where computed_at is null


