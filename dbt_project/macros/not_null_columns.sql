{#-
  Generic test: none of `columns` is NULL, checked in ONE query per model.

  Why not dbt's `not_null` per column: every data test is a dbt node run serially (threads=1,
  the SQLite DuckLake catalog) and a Dagster asset check (event-log writes before the run
  starts), so 35 column tests cost a scan more than the rows they read. One test per model
  reads the same rows once (README "Data tests").

  Rows: one per offending row, with the listed columns and `null_columns`, the names of those
  that are NULL in it ('session_date, ts'): run the test's compiled SQL to see them.
  Message: dbt's own failure text is only "Got N results", which would no longer say which
  column is wrong (the per-column test names did). So `fail_calc` raises DuckDB's error()
  with the count per column when a row fails: the test ends as `error` (build stopped,
  asset check failed, as a failing test does) and the message names the columns, e.g.
  "2 rows have NULL where none is allowed: session_date in 2, ts in 1 ...".
  error() is evaluated only when a row fails (a CASE branch), so a passing test costs one
  count(*) like not_null's. (So `severity: warn` cannot soften it: no test here uses that.)

  Scope: `{{ model }}` goes through get_where_subquery (test_scope.sql) like every data test,
  so an incremental build checks only the rows it changed, as not_null did.
-#}
{% test not_null_columns(model, columns) %}
{%- if columns is string or not columns -%}
  {{ exceptions.raise_compiler_error("not_null_columns needs `columns`, a non-empty list of column names, e.g. arguments: {columns: [symbol, ts]}") }}
{%- endif -%}
{%- set counts = [] -%}
{%- for c in columns -%}
  {%- do counts.append("case when count(*) filter (where list_contains(null_list, '" ~ c ~ "')) > 0 then '" ~ c
                       ~ " in ' || count(*) filter (where list_contains(null_list, '" ~ c ~ "')) end") -%}
{%- endfor -%}
{{ config(fail_calc="case when count(*) = 0 then 0 else error(count(*) || ' row' || case when count(*) = 1 then ' has' else 's have' end"
                    ~ " || ' NULL where none is allowed: ' || concat_ws(', ', " ~ counts | join(', ') ~ ")"
                    ~ " || '. Run this test''s compiled SQL to list them (column null_columns); fix the rows or their source, then build again.') end") }}
select
  {% for c in columns %}{{ c }},
  {% endfor -%}
  array_to_string(null_list, ', ') as null_columns,
  null_list
from (
  select *, list_filter([
    {%- for c in columns %}
    case when {{ c }} is null then '{{ c }}' end{{ ',' if not loop.last }}
    {%- endfor %}
  ], x -> x is not null) as null_list
  from {{ model }}
  where {% for c in columns %}{{ c }} is null{{ ' or ' if not loop.last }}{% endfor %}
) dbt_null_rows
{% endtest %}
