-- One row per scan, symbol, timeframe, bar and signal kind, with a score and a
-- human-readable reason. Scans come from rules.yaml (var `scans`); definitions are in
-- macros/signals.sql. Point in time: a signal at bar t reads only bars <= t.
{{ config(
    materialized='incremental',
    incremental_strategy='signal_scope',
    unique_key=['scan', 'symbol', 'timeframe', 'ts', 'kind'],
    on_schema_change='append_new_columns'
) }}
{%- set scans = var('scans') %}
{%- set state = signals_state() %}
with {{ signals_scope_ctes(state) }},
{%- for s in scans %}
  {%- set full = scan_is_full(s, state) %}
  {%- if s.kind == 'breakout' %}{{ breakout_scan(s, loop.index, full) }}
  {%- elif s.kind == 'crp' %}{{ crp_scan(s, loop.index, s.timeframes[0] != '1d', full) }}
  {%- elif s.kind == 'cpr' %}{{ cpr_scan(s, loop.index, full) }}
  {%- elif s.kind == 'expr' %}{{ expr_scan(s, loop.index, full) }}
  {%- else %}{{ exceptions.raise_compiler_error("scan " ~ s.name ~ ": unknown kind " ~ s.kind) }}
  {%- endif %},
{%- endfor %}
all_scans as (
  select null::varchar as scan, null::varchar as symbol, null::varchar as timeframe,
         null::timestamp as ts, null::date as session_date, null::varchar as kind,
         null::varchar as direction, null::double as score, null::varchar as reason,
         null::double as close, null::double as level, null::varchar as rule_fingerprint
  where false
  {%- for s in scans %}
  union all select * from scan_{{ loop.index }}
  {%- endfor %}
)
select scan, symbol, timeframe, ts, session_date, kind, direction,
       score::double as score, reason, close, level, rule_fingerprint,
       (select max(computed_at) from {{ ref('int_indicators') }}) as as_of
from all_scans
