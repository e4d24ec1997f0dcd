
    
    



select rule_fingerprint
from "w"."marts"."signals"
where rule_fingerprint is null


