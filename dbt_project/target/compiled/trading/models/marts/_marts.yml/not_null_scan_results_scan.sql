
    
    



select scan
from "w"."marts"."scan_results"
where scan is null


