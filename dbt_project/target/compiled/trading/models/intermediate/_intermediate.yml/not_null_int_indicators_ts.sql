
    
    



select ts
from "w"."intermediate"."int_indicators"
where ts is null


