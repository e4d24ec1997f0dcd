{#-
  Which rows a data test checks (README "Data tests").

  Every data test of the project has `where: __changed_rows__` (dbt_project.yml, `data_tests:`).
  dbt hands each test's model through `get_where_subquery`, overridden here to replace that
  placeholder at run time:

    * every row: var `full_tests: true`, `--full-refresh`, or a model without a `test_scope`
      meta (small tables: dim_symbols, stg_symbols, raw.symbols). A first build is one
      increment: all its rows carry the same computed_at / as_of, so all are tested;
    * otherwise the rows of the latest increment, from the model's `test_scope` meta:
        {column: computed_at}  rows whose `column` is the model's newest value (every row a
                               build writes carries that build's computed_at);
        {column: as_of, newest_of: int_indicators.computed_at}
                               rows whose `column` is at least the newest value of another
                               model's column (a signal's as_of is the newest computed_at its
                               build saw, so a build that adds no signal tests none);
        {column: session_date, from_changed: signals}
                               rows whose `column` is at least its smallest value among the
                               latest increment of another model (scan_results: the sessions
                               with new signals; a literal, so DuckDB filters the signals
                               before aggregating them instead of after);
        {column: ingested_at, after: int_indicators}
                               bars ingested after the newest one `int_indicators` has built
                               (the bars the running build reads), or when there are none (a
                               `dbt test` after the build) after the newest one it had before
                               its latest build (that model needs a computed_at column).
  A uniqueness test (`unique`, `unique_combination`) reads every row, old or new, whose key
  is the key of one of those rows (for `unique_combination`, which counts NULL keys as equal,
  plus every row with a NULL in its key): a new row duplicating an old one still fails.
  Every other test (`not_null_columns`, one per model for all its not-null columns;
  `accepted_values`) reads just those rows.

  Cost: the newest value is a subquery in the test (DuckDB answers max() from the lake's file
  statistics); the `after` and `from_changed` cut-offs are read here, before the test runs,
  and written into its SQL as literals.
-#}

{% macro get_where_subquery(relation) -%}
  {%- set where = config.get('where', '') -%}
  {%- if not where -%}
    {{ return(relation) }}
  {%- endif -%}
  {%- set predicates = changed_rows_predicates(relation) if '__changed_rows__' in where else ['1=1'] -%}
  {%- set branches = [] -%}
  {%- for p in predicates -%}
    {%- set this_where = where | replace('__changed_rows__', p) -%}
    {%- if this_where | trim == '1=1' and predicates | length == 1 -%}
      {{ return(relation) }}
    {%- endif -%}
    {%- do branches.append('select * from ' ~ relation ~ ' as dbt_scoped where ' ~ this_where) -%}
  {%- endfor -%}
  {{ return('(' ~ branches | join(' union all ') ~ ') dbt_subquery') }}
{%- endmacro %}


{#- False when this invocation tests every row (`full_tests` var, --full-refresh). -#}
{% macro tests_are_scoped() -%}
  {%- set full = var('full_tests', false) -%}
  {%- if full is string -%}
    {%- set full = full | lower in ('true', '1', 'yes') -%}
  {%- endif -%}
  {{ return(not (full or flags.FULL_REFRESH)) }}
{%- endmacro %}


{#- For a uniqueness test: its key columns, and whether rows with a NULL in them can be
    duplicates (`unique_combination` groups NULLs together; dbt's `unique` skips them). -#}
{% macro test_scope_keys() -%}
  {%- set meta = model.get('test_metadata') or {} -%}
  {%- set kwargs = meta.get('kwargs') or {} -%}
  {%- if meta.get('name') == 'unique' -%}
    {{ return({'keys': [kwargs.get('column_name')], 'nulls': false}) }}
  {%- elif meta.get('name') == 'unique_combination' -%}
    {{ return({'keys': kwargs.get('columns') or [], 'nulls': true}) }}
  {%- endif -%}
  {{ return({'keys': [], 'nulls': false}) }}
{%- endmacro %}


{#- Predicates on `dbt_scoped` (the tested relation) whose rows, unioned, the test reads. -#}
{% macro changed_rows_predicates(relation) -%}
  {%- if not execute or not tests_are_scoped() -%}
    {{ return(['1=1']) }}
  {%- endif -%}
  {%- set node = graph.nodes.get(model.get('attached_node') or '') or {} -%}
  {%- set scope = (node.get('config') or {}).get('meta', {}).get('test_scope') -%}
  {%- set changed = changed_rows_condition(relation, scope) if scope else none -%}
  {%- if changed is none -%}
    {{ return(['1=1']) }}
  {%- endif -%}
  {%- set unique = test_scope_keys() -%}
  {%- set keys = unique['keys'] -%}
  {#- the condition reads only scope.column: when that is part of the key, every row sharing
      a key with a changed row is a changed row itself -#}
  {%- if not keys or scope.get('column') in keys -%}
    {{ return([changed | replace('__t__', 'dbt_scoped')]) }}
  {%- endif -%}
  {%- set scoped, new, nulls = [], [], [] -%}
  {%- for k in keys -%}
    {%- do scoped.append('dbt_scoped.' ~ k) -%}
    {%- do new.append('dbt_changed.' ~ k) -%}
    {%- do nulls.append('dbt_scoped.' ~ k ~ ' is null') -%}
  {%- endfor -%}
  {#- a key holding a NULL never matches `in`: such rows are read apart (a second branch) -#}
  {%- set same_key = '(' ~ scoped | join(', ') ~ ') in (select ' ~ new | join(', ') ~ ' from ' ~ relation
                     ~ ' as dbt_changed where ' ~ changed | replace('__t__', 'dbt_changed') ~ ')' -%}
  {{ return([same_key, '(' ~ nulls | join(' or ') ~ ')'] if unique['nulls'] else [same_key]) }}
{%- endmacro %}


{#- The relation of model `name` in the warehouse, or none if it is not built yet. -#}
{% macro built_relation(name) -%}
  {%- set node = graph.nodes.get('model.' ~ project_name ~ '.' ~ name) -%}
  {%- if not node -%}
    {{ return(none) }}
  {%- endif -%}
  {{ return(adapter.get_relation(database=node.database, schema=node.schema, identifier=node.alias)) }}
{%- endmacro %}


{#- The newest value of `column` in `relation` (`where` optional), as a timestamp literal. -#}
{% macro newest_literal(relation, column, where='true') -%}
  {%- set value = run_query("select strftime(max(" ~ column ~ "), '%Y-%m-%d %H:%M:%S.%f') from "
                            ~ relation ~ " where " ~ where).columns[0].values()[0] -%}
  {{ return(none if value is none else "timestamp '" ~ value ~ "'") }}
{%- endmacro %}


{#- Condition on alias `__t__` selecting the model's latest increment; none: every row. -#}
{% macro changed_rows_condition(relation, scope) -%}
  {%- set col = scope.get('column') -%}
  {%- if scope.get('after') -%}
    {%- set built = built_relation(scope.get('after')) -%}
    {%- if built is none -%}
      {{ return(none) }}
    {%- endif -%}
    {%- set row = run_query("select strftime(w, '%Y-%m-%d %H:%M:%S.%f'), exists (select 1 from " ~ relation
                            ~ " where " ~ col ~ " > w) from (select max(" ~ col ~ ") as w from " ~ built ~ ")").rows[0] -%}
    {%- set cut = none if row[0] is none else "timestamp '" ~ row[0] ~ "'" -%}
    {%- if cut is not none and not row[1] -%}  {#- nothing pending: the bars of its latest build -#}
      {%- set cut = newest_literal(built, col, 'computed_at < (select max(computed_at) from ' ~ built ~ ')') -%}
    {%- endif -%}
    {{ return(none if cut is none else '__t__.' ~ col ~ ' > ' ~ cut) }}
  {%- endif -%}
  {%- if scope.get('from_changed') -%}
    {%- set name = scope.get('from_changed') -%}
    {%- set upstream = built_relation(name) -%}
    {%- set node = graph.nodes.get('model.' ~ project_name ~ '.' ~ name) or {} -%}
    {%- set upstream_scope = (node.get('config') or {}).get('meta', {}).get('test_scope') -%}
    {%- set changed = changed_rows_condition(upstream, upstream_scope) if upstream is not none and upstream_scope else none -%}
    {%- if changed is none -%}
      {{ return(none) }}
    {%- endif -%}
    {%- set row = run_query('select min(' ~ col ~ ')::varchar, typeof(min(' ~ col ~ ')) from ' ~ upstream
                            ~ ' as __t__ where ' ~ changed).rows[0] -%}
    {%- if row[0] is none -%}
      {{ return('false') }}
    {%- endif -%}
    {{ return('__t__.' ~ col ~ " >= '" ~ row[0] | replace("'", "''") ~ "'::" ~ row[1]) }}
  {%- endif -%}
  {%- set of = (scope.get('newest_of') or '').split('.') -%}
  {%- set newest_in = built_relation(of[0]) if of | length == 2 else relation -%}
  {%- if newest_in is none -%}
    {{ return(none) }}
  {%- endif -%}
  {{ return('__t__.' ~ col ~ ' >= (select max(' ~ (of[1] if of | length == 2 else col) ~ ') from ' ~ newest_in ~ ')') }}
{%- endmacro %}
