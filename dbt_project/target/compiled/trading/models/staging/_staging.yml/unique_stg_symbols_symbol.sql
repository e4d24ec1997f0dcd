
    
    

select
    symbol as unique_field,
    count(*) as n_records

from "w"."staging"."stg_symbols"
where symbol is not null
group by symbol
having count(*) > 1


