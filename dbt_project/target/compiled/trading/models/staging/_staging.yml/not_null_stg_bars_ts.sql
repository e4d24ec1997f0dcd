
    
    



select ts
from "w"."staging"."stg_bars"
where ts is null


