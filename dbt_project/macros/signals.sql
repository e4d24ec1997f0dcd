{#-
  Signal definitions (DESIGN.md "Signal definitions"); every threshold comes from the
  `scans` var, which trading_pipeline.scans.rules.dbt_vars() builds from rules.yaml.

  Incremental scope. `signals` stores `as_of` (the newest int_indicators.computed_at it has
  seen) and each scan's `rule_fingerprint`. A build recomputes:
    * breakout / cpr / expr scans: per (symbol, timeframe) series, the rows from the earliest
      indicator row rewritten since `as_of` (breakouts read `lookback` bars of context,
      expression scans `expr_lookback`);
    * crp scans: whole (timeframe, session) cross-sections touched since `as_of`, because
      the top-N ranking compares symbols within a session;
    * a scan whose fingerprint is not stored yet (new scan, changed threshold): everything.
  The `signal_scope` incremental strategy deletes exactly that scope before inserting, so a
  signal that disappears after a correction is removed too.
-#}

{#- What the stored table already covers: the newest indicator computation it has seen
    (`wm`) and the fingerprints of the scans it holds. Read once per use at run time; the
    model and the strategy both call it before anything is deleted, so they agree. -#}
{% macro signals_state() %}
  {%- set state = {'wm': none, 'fresh': []} -%}
  {%- if execute and is_incremental() -%}
    {%- set wm = run_query("select strftime(max(as_of), '%Y-%m-%d %H:%M:%S.%f') from " ~ this).columns[0].values()[0] -%}
    {%- do state.update({'wm': wm}) -%}
    {%- set rows = run_query("select distinct scan || '|' || rule_fingerprint from " ~ this).columns[0].values() -%}
    {%- do state.update({'fresh': rows | list}) -%}
  {%- endif -%}
  {{ return(state) }}
{% endmacro %}

{%- macro scan_is_full(s, state) -%}
  {{ return(state.wm is none or (s.name ~ '|' ~ s.fingerprint) not in state.fresh) }}
{%- endmacro -%}

{% macro signals_scope_ctes(state) %}
scope_changed as (
  select symbol, timeframe, ts, session_date, bar_index
  from {{ ref('int_indicators') }}
  {%- if state.wm is not none %}
  where computed_at > timestamp '{{ state.wm }}'
     -- a delisting loaded since: its symbol's signals from the ex-date on are recomputed (away)
     or exists (select 1 from {{ ref('stg_corporate_actions') }} d
                where d.kind = 'delisting' and d.symbol = {{ ref('int_indicators') }}.symbol
                  and d.loaded_at > timestamp '{{ state.wm }}'
                  and {{ ref('int_indicators') }}.session_date >= d.ex_date)
  {%- endif %}
),
scope_series as (
  select symbol, timeframe, min(bar_index) as from_index, min(ts) as from_ts
  from scope_changed group by all
),
scope_sessions as (
  select distinct timeframe, session_date from scope_changed
)
{% endmacro %}

{%- macro in_list(values) -%}
({% for v in values %}'{{ v }}'{% if not loop.last %}, {% endif %}{% endfor %})
{%- endmacro -%}

{#- A delisted symbol is not scanned from its delisting's ex-date on (the first session it no
    longer trades); its history before stays. The subquery's columns are renamed so that an
    unqualified `symbol` / `session_date` (alias '') binds to the scanned row, not to the
    subquery's own columns (which would drop every symbol from any delisting's ex-date on). -#}
{%- macro listed(alias='') -%}
 and not exists (select 1 from (select symbol as dl_symbol, ex_date as dl_ex_date
                                from {{ ref('stg_corporate_actions') }} where kind = 'delisting') dl
                 where dl.dl_symbol = {{ alias }}symbol and dl.dl_ex_date <= {{ alias }}session_date)
{%- endmacro -%}

{#- A scan naming a universe (rules.yaml `universe: NAME`) fires on a symbol's bar only on a
    session the symbol is a member (int_universe_members: point in time, per session). Its
    `symbols`, the universe's candidates, only narrow the series read; the bars before a
    symbol joined still give its windows their context. -#}
{%- macro in_universe(s, alias='') -%}
  {%- if s.get('universe') %}
 and exists (select 1 from (select symbol as um_symbol, session_date as um_session_date
                             from {{ ref('int_universe_members') }}
                             where universe = '{{ s.universe }}' and is_member) um
             where um.um_symbol = {{ alias }}symbol and um.um_session_date = {{ alias }}session_date)
  {%- endif -%}
{%- endmacro -%}

{%- macro scan_filters(s, alias='') -%}
  {{ listed(alias) }}
  {{- in_universe(s, alias) }}
  {%- if s.symbols %} and {{ alias }}symbol in {{ in_list(s.symbols) }}{% endif -%}
  {%- if s.min_price is not none %} and {{ alias }}close >= {{ s.min_price }}{% endif -%}
  {%- if s.max_price is not none %} and {{ alias }}close <= {{ s.max_price }}{% endif -%}
  {%- if s.min_volume is not none %} and {{ alias }}volume >= {{ s.min_volume }}{% endif -%}
  {%- if s.max_volume is not none %} and {{ alias }}volume <= {{ s.max_volume }}{% endif -%}
{%- endmacro -%}

{#- Breakout: close beyond the extreme of the previous `lookback` bars (current bar
    excluded) on volume >= volume_multiple x its 20-bar average; score = distance past the
    level in ATR(14)s. -#}
{% macro breakout_scan(s, i, full) %}
scan_{{ i }}_base as (
  select ind.symbol, ind.timeframe, ind.ts, ind.session_date, ind.high, ind.low, ind.close,
         ind.volume, ind.volume_avg_20, ind.atr_14, ind.bar_index,
         {% if full %}0{% else %}cs.from_index{% endif %} as from_index
  from {{ ref('int_indicators') }} ind
  {%- if not full %}
  join scope_series cs on cs.symbol = ind.symbol and cs.timeframe = ind.timeframe
  {%- endif %}
  where ind.timeframe in {{ in_list(s.timeframes) }}
    {%- if s.symbols %} and ind.symbol in {{ in_list(s.symbols) }}{% endif %}
    {%- if not full %} and ind.bar_index >= cs.from_index - {{ s.lookback }}{% endif %}
),
scan_{{ i }}_win as (
  select *,
         max(high) over w as level_high,
         min(low) over w as level_low
  from scan_{{ i }}_base
  window w as (partition by symbol, timeframe order by bar_index
               rows between {{ s.lookback }} preceding and 1 preceding)
),
scan_{{ i }}_hits as (
  select *, close > level_high as is_up
  from scan_{{ i }}_win
  where bar_index >= from_index
    and bar_index >= {{ s.lookback }}  -- a full lookback window exists
    and atr_14 > 0 and volume_avg_20 > 0
    and volume >= {{ s.volume_multiple }} * volume_avg_20
    and (close > level_high or close < level_low)
    {{ scan_filters(s) }}
),
scan_{{ i }} as (
  select '{{ s.name }}' as scan, symbol, timeframe, ts, session_date,
         case when is_up then 'breakout_up' else 'breakout_down' end as kind,
         case when is_up then 'long' else 'short' end as direction,
         case when is_up then (close - level_high) / atr_14 else (level_low - close) / atr_14 end as score,
         printf('close %.2f %s %d-bar %s %.2f on %.1fx volume',
                close, case when is_up then 'above' else 'below' end, {{ s.lookback }},
                case when is_up then 'high' else 'low' end,
                case when is_up then level_high else level_low end,
                volume / volume_avg_20) as reason,
         close,
         case when is_up then level_high else level_low end as level,
         '{{ s.fingerprint }}' as rule_fingerprint
  from scan_{{ i }}_hits
  where (case when is_up then (close - level_high) / atr_14 else (level_low - close) / atr_14 end) >= {{ s.min_score }}
)
{% endmacro %}

{#- CRP, close-range-pattern (README "CRP"): tiered 0-100 score on close position, range,
    relative volume and change; fires at score >= min_score inside the price band, above the
    liquidity floor (and inside the optional volume band), top_n per session.

    Relative volume rvol = volume / the average volume of the previous rvol_lookback bars of
    the symbol (the current bar excluded: point in time, and a spike does not dilute its own
    average); null until that many previous bars exist. The liquidity floor compares the
    average dollar volume (close x volume) of the same previous bars (as many as exist, at
    least one) with min_avg_dollar_volume. A bar with no volume data (volume null or 0 and no
    volume in its previous bars: an index) gets the neutral 0.5 volume part and skips the
    floor and every volume filter; a bar whose rvol is not known yet also scores 0.5.

    Intraday, each symbol's session is aggregated from the open up to the cutoff time (bars
    that have ended by then, exchange time) and the signal sits on the last bar used; rvol is
    that window's volume per bar over the same window's average volume per bar in the previous
    rvol_lookback sessions of the symbol, and the floor uses those windows' dollar volume. -#}
{% macro crp_scan(s, i, intraday, full) %}
{%- set n = s.rvol_lookback %}
{%- if not intraday %}
{%- if not full %}
scan_{{ i }}_from as (  -- per series, the first bar of a recomputed session
  select ind.symbol, ind.timeframe, min(ind.bar_index) as from_index
  from {{ ref('int_indicators') }} ind
  join scope_sessions ss on ss.timeframe = ind.timeframe and ss.session_date = ind.session_date
  where ind.timeframe in {{ in_list(s.timeframes) }}
    {%- if s.symbols %} and ind.symbol in {{ in_list(s.symbols) }}{% endif %}
  group by all
),
{%- endif %}
scan_{{ i }}_hist as (  -- those bars and the {{ n }} before each series' first one
  select ind.symbol, ind.timeframe, ind.ts, ind.session_date, ind.open, ind.high, ind.low,
         ind.close, coalesce(ind.volume, 0) as volume, ind.bar_index,
         {% if full %}0{% else %}f.from_index{% endif %} as from_index
  from {{ ref('int_indicators') }} ind
  {%- if not full %}
  join scan_{{ i }}_from f on f.symbol = ind.symbol and f.timeframe = ind.timeframe
  {%- endif %}
  where ind.timeframe in {{ in_list(s.timeframes) }}
    {%- if s.symbols %} and ind.symbol in {{ in_list(s.symbols) }}{% endif %}
    {%- if not full %} and ind.bar_index >= f.from_index - {{ n }}{% endif %}
),
scan_{{ i }}_trail as (
  select *,
         count(*) over w as n_prev,
         avg(volume) over w as vol_avg,
         avg(close * volume) over w as dollar_avg,
         coalesce(max(volume) over w, 0) as prev_max_volume
  from scan_{{ i }}_hist
  window w as (partition by symbol, timeframe order by bar_index
               rows between {{ n }} preceding and 1 preceding)
),
scan_{{ i }}_bars as (
  select symbol, timeframe, ts, session_date, open, high, low, close, volume,
         volume > 0 or prev_max_volume > 0 as has_volume,
         case when n_prev = {{ n }} and vol_avg > 0 then volume / vol_avg end as rvol,
         dollar_avg
  from scan_{{ i }}_trail t
  where bar_index >= from_index
    {%- if not full %}
    and exists (select 1 from scope_sessions ss
                where ss.timeframe = t.timeframe and ss.session_date = t.session_date)
    {%- endif %}
),
{%- else %}
scan_{{ i }}_sessions as (  -- every session of every series (its first bar), for the trailing window
  select symbol, timeframe, session_date,
         lag(session_date, {{ n }}) over (partition by symbol, timeframe order by session_date) as back_n
  from {{ ref('int_indicators') }}
  where timeframe in {{ in_list(s.timeframes) }} and session_bar_index = 0
    {%- if s.symbols %} and symbol in {{ in_list(s.symbols) }}{% endif %}
),
{%- if not full %}
scan_{{ i }}_from as (  -- per series, {{ n }} sessions before its first recomputed session
  select se.symbol, se.timeframe, min(coalesce(se.back_n, date '0001-01-01')) as from_session
  from scan_{{ i }}_sessions se
  join scope_sessions ss on ss.timeframe = se.timeframe and ss.session_date = se.session_date
  group by all
),
{%- endif %}
scan_{{ i }}_win as (  -- each series' session from the open up to the cutoff, as one bar
  select symbol, timeframe, max(ts) as ts, session_date,
         arg_min(open, ts) as open, max(high) as high, min(low) as low,
         arg_max(close, ts) as close, sum(volume) as volume, count(*) as n_bars,
         sum(close * volume) as dollar_volume
  from (
    select ind.symbol, ind.timeframe, ind.ts, ind.session_date, ind.open, ind.high, ind.low,
           ind.close, coalesce(ind.volume, 0) as volume,
           timezone(coalesce(sy.timezone, 'America/New_York'), timezone('UTC', ind.ts))
             + to_minutes(case ind.timeframe when '1m' then 1 when '5m' then 5 when '15m' then 15
                             when '30m' then 30 when '1h' then 60 else 0 end) as local_end
    from {{ ref('int_indicators') }} ind
    left join {{ ref('stg_symbols') }} sy on sy.symbol = ind.symbol
    {%- if not full %}
    join scan_{{ i }}_from f on f.symbol = ind.symbol and f.timeframe = ind.timeframe
    {%- endif %}
    where ind.timeframe in {{ in_list(s.timeframes) }}
      {%- if s.symbols %} and ind.symbol in {{ in_list(s.symbols) }}{% endif %}
      {%- if not full %} and ind.session_date >= f.from_session{% endif %}
  ) b
  where local_end <= session_date + time '{{ s.cutoff }}'
  group by symbol, timeframe, session_date
),
scan_{{ i }}_trail as (  -- sessions without bars before the cutoff count as missing
  select se.symbol, se.timeframe, se.session_date, w.ts, w.open, w.high, w.low, w.close,
         w.volume, w.n_bars,
         count(w.volume) over p as n_prev,
         avg(w.volume / w.n_bars) over p as vol_avg_per_bar,
         avg(w.dollar_volume) over p as dollar_avg,
         coalesce(max(w.volume) over p, 0) as prev_max_volume
  from scan_{{ i }}_sessions se
  left join scan_{{ i }}_win w
    on w.symbol = se.symbol and w.timeframe = se.timeframe and w.session_date = se.session_date
  {%- if not full %}
  join scan_{{ i }}_from f on f.symbol = se.symbol and f.timeframe = se.timeframe
  where se.session_date >= f.from_session
  {%- endif %}
  window p as (partition by se.symbol, se.timeframe order by se.session_date
               rows between {{ n }} preceding and 1 preceding)
),
scan_{{ i }}_bars as (
  select symbol, timeframe, ts, session_date, open, high, low, close, volume,
         volume > 0 or prev_max_volume > 0 as has_volume,
         case when n_prev = {{ n }} and vol_avg_per_bar > 0
              then volume / n_bars / vol_avg_per_bar end as rvol,
         dollar_avg
  from scan_{{ i }}_trail t
  where ts is not null
    {%- if not full %}
    and exists (select 1 from scope_sessions ss
                where ss.timeframe = t.timeframe and ss.session_date = t.session_date)
    {%- endif %}
),
{%- endif %}
scan_{{ i }}_feat as (
  select *,
         case when high = low then 0.5 else (close - low) / (high - low) end as cp,
         (high - low) / close as rng,
         (close - open) / open as chg,
         case when (high - low) / close <= {{ s.range_tiers[0] }} then 1.0
              when (high - low) / close <= {{ s.range_tiers[1] }} then 0.67 else 0.17 end as range_part,
         case when not has_volume or rvol is null then 0.5
              when rvol >= {{ s.rvol_tiers[0] }} then 1.0 when rvol >= {{ s.rvol_tiers[1] }} then 0.75
              when rvol >= {{ s.rvol_tiers[2] }} then 0.5 else 0.25 end as volume_part
  from scan_{{ i }}_bars
  where close > 0 and open > 0
    {{ listed() }}
    {{- in_universe(s) }}
    {%- if s.min_price is not none %} and close >= {{ s.min_price }}{% endif %}
    {%- if s.max_price is not none %} and close <= {{ s.max_price }}{% endif %}
    {%- if s.min_volume is not none %} and (not has_volume or volume >= {{ s.min_volume }}){% endif %}
    {%- if s.max_volume is not none %} and (not has_volume or volume <= {{ s.max_volume }}){% endif %}
    {%- if s.min_avg_dollar_volume %} and (not has_volume or dollar_avg >= {{ s.min_avg_dollar_volume }}){% endif %}
),
scan_{{ i }}_scored as (
  select *,
         100 * (0.4 * case when cp >= 1 - {{ s.close_within }} then 1.0 else 0.25 end
                + 0.3 * range_part + 0.2 * volume_part
                + 0.1 * case when chg > {{ s.change_tiers[0] }} then 1.0
                             when chg > {{ s.change_tiers[1] }} then 0.5 else 0.2 end) as score_long,
         100 * (0.4 * case when cp <= {{ s.close_within }} then 1.0 else 0.25 end
                + 0.3 * range_part + 0.2 * volume_part
                + 0.1 * case when chg < -{{ s.change_tiers[0] }} then 1.0
                             when chg < -{{ s.change_tiers[1] }} then 0.5 else 0.2 end) as score_short
  from scan_{{ i }}_feat
),
scan_{{ i }}_eligible as (
  select *, greatest(score_long, score_short) as score, score_long >= score_short as is_long
  from scan_{{ i }}_scored
  where greatest(score_long, score_short) >= {{ s.min_score }}
),
scan_{{ i }}_cut as (  -- the top_n-th best score per session: rank only rows above it
  select timeframe, session_date, list_min(max(score, {{ s.top_n }})) as cut
  from scan_{{ i }}_eligible group by timeframe, session_date
),
scan_{{ i }}_ranked as (
  select e.*,
         row_number() over (partition by e.timeframe, e.session_date
                            order by e.score desc, e.symbol) as rank_in_session
  from scan_{{ i }}_eligible e
  join scan_{{ i }}_cut c on c.timeframe = e.timeframe and c.session_date = e.session_date
  where e.score >= c.cut
),
scan_{{ i }} as (
  select '{{ s.name }}' as scan, symbol, timeframe, ts, session_date,
         case when is_long then 'crp_long' else 'crp_short' end as kind,
         case when is_long then 'long' else 'short' end as direction,
         score,
         printf('%s CRP score %.0f (#%d of session): close at %.0f%% of range, range %.2f%%, %s, change %+.2f%%',
                case when is_long then 'long' else 'short' end, score, rank_in_session,
                cp * 100, rng * 100,
                case when not has_volume then 'no volume reported (neutral)'
                     when rvol is null then 'volume average not known yet (neutral)'
                     else printf('volume %.1fx its previous {{ n }}-{{ "session" if intraday else "bar" }} average', rvol) end,
                chg * 100) as reason,
         close,
         null::double as level,
         '{{ s.fingerprint }}' as rule_fingerprint
  from scan_{{ i }}_ranked
  where rank_in_session <= {{ s.top_n }}
)
{% endmacro %}

{#- CPR narrow: published at the first bar of a session whose CPR width% is in the lowest
    decile of the last cpr_lookback sessions; score = 100 x (1 - width rank). -#}
{% macro cpr_scan(s, i, full) %}
scan_{{ i }} as (
  select '{{ s.name }}' as scan, ind.symbol, ind.timeframe, ind.ts, ind.session_date,
         'cpr_narrow' as kind, 'neutral' as direction,
         100 * (1 - ind.cpr_width_rank) as score,
         printf('CPR width %.3f%% is narrower than %.0f%% of the last %d sessions (pivot %.2f, bc %.2f, tc %.2f)',
                ind.cpr_width_pct, 100 * (1 - ind.cpr_width_rank), ind.cpr_lookback,
                ind.cpr_pivot, ind.cpr_bc, ind.cpr_tc) as reason,
         ind.close,
         ind.cpr_pivot as level,
         '{{ s.fingerprint }}' as rule_fingerprint
  from {{ ref('int_indicators') }} ind
  {%- if not full %}
  join scope_series cs on cs.symbol = ind.symbol and cs.timeframe = ind.timeframe
  {%- endif %}
  where ind.timeframe in {{ in_list(s.timeframes) }}
    {%- if s.symbols %} and ind.symbol in {{ in_list(s.symbols) }}{% endif %}
    and ind.cpr_narrow
    and ind.session_bar_index = 0
    {%- if not full %} and ind.bar_index >= cs.from_index{% endif %}
    and 100 * (1 - ind.cpr_width_rank) >= {{ s.min_score }}
    {{ scan_filters(s, 'ind.') }}
)
{% endmacro %}

{#- Expression scan (rules.yaml `kind: expr`): `when` and `score` were parsed, checked and
    compiled to SQL over the series window by trading_pipeline/scans/expressions.py; here they
    run. `expr_layers` are columns a window reads that are windowed themselves (one CTE per
    layer); `expr_lookback` bars before the first recomputed bar are enough context, so an
    incremental build recomputes a series like breakout does. A row fires where `when` is
    true and the score is known (and >= min_score when given). -#}
{% macro expr_scan(s, i, full) %}
scan_{{ i }}_l0 as (
  select ind.*, {% if full %}0{% else %}cs.from_index{% endif %} as from_index
  from {{ ref('int_indicators') }} ind
  {%- if not full %}
  join scope_series cs on cs.symbol = ind.symbol and cs.timeframe = ind.timeframe
  {%- endif %}
  where ind.timeframe in {{ in_list(s.timeframes) }}
    {%- if s.symbols %} and ind.symbol in {{ in_list(s.symbols) }}{% endif %}
    {%- if not full %} and ind.bar_index >= cs.from_index - {{ s.expr_lookback }}{% endif %}
),
{%- for layer in s.expr_layers %}
scan_{{ i }}_l{{ loop.index }} as (
  select *{% for col in layer %}, {{ col[1] }} as {{ col[0] }}{% endfor %}
  from scan_{{ i }}_l{{ loop.index0 }}
),
{%- endfor %}
scan_{{ i }}_eval as (
  select *, {{ s.when_sql }} as fired, ({{ s.score_sql }})::double as expr_score
  from scan_{{ i }}_l{{ s.expr_layers | length }}
),
scan_{{ i }} as (
  select '{{ s.name }}' as scan, symbol, timeframe, ts, session_date,
         'expr_{{ s.direction }}' as kind, '{{ s.direction }}' as direction,
         expr_score as score,
         printf('{{ s.direction }}: {{ s.when }} (close %.2f, score %.4g)', close, expr_score) as reason,
         close,
         null::double as level,
         '{{ s.fingerprint }}' as rule_fingerprint
  from scan_{{ i }}_eval
  where bar_index >= from_index
    and fired and expr_score is not null
    {%- if s.min_score is not none %} and expr_score >= {{ s.min_score }}{% endif %}
    {{ scan_filters(s) }}
)
{% endmacro %}

{#- What a build recomputes for one scan, as a predicate on a stored signals row `t`. -#}
{% macro scan_scope_predicate(s, t, full) %}
  {%- if full %}
  ({{ t }}.scan = '{{ s.name }}')
  {%- elif s.kind == 'crp' %}
  ({{ t }}.scan = '{{ s.name }}' and exists (select 1 from scope_sessions ss
      where ss.timeframe = {{ t }}.timeframe and ss.session_date = {{ t }}.session_date))
  {%- else %}
  ({{ t }}.scan = '{{ s.name }}' and exists (select 1 from scope_series cs
      where cs.symbol = {{ t }}.symbol and cs.timeframe = {{ t }}.timeframe and {{ t }}.ts >= cs.from_ts))
  {%- endif %}
{% endmacro %}

{#- Incremental strategy for `signals`: delete the recomputed scope (decided from the
    stored state before anything changes), then insert the recomputed rows. -#}
{% macro get_incremental_signal_scope_sql(arg_dict) %}
  {%- set target = arg_dict['target_relation'] -%}
  {%- set temp = arg_dict['temp_relation'] -%}
  {%- set cols = arg_dict['dest_columns'] | map(attribute='quoted') | join(', ') -%}
  {%- set scans = var('scans') -%}
  {%- set state = signals_state() -%}
  with {{ signals_scope_ctes(state) }}
  delete from {{ target }} as t
  where t.scan not in {{ in_list(scans | map(attribute='name') | list or ['']) }}
  {%- for s in scans %}
     or {{ scan_scope_predicate(s, 't', scan_is_full(s, state)) }}
  {%- endfor %};
  insert into {{ target }} ({{ cols }}) select {{ cols }} from {{ temp }};
{% endmacro %}
