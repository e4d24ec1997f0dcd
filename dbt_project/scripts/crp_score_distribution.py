"""CRP score distribution on the sample market (GOOG + 20 synthetic symbols, daily and 1m).

Loads the bundled sample into WORKDIR/sample.duckdb, builds the signals with the repo's
rules.yaml changed only so that the crp scans keep every scored bar (min_score 0, top_n
huge, no liquidity floor), then prints the share of bars at or above each threshold, the
score histogram, and each series' trailing average dollar volume (what the floor sees).
The README's CRP figures come from this script.

    .venv/bin/python dbt_project/scripts/crp_score_distribution.py /tmp/crp_dist
"""
import sys
from pathlib import Path

import duckdb
import polars as pl
import yaml

from trading_pipeline.marketdata.sources.sample import (
    DAILY_END,
    DAILY_START,
    INTRADAY_END,
    INTRADAY_START,
    SampleBarSource,
)
from trading_pipeline.marketdata.warehouse import upsert_bars, writer
from trading_pipeline.scans import dbt_runner
from trading_pipeline.scans.rules import load_rules
from trading_pipeline.settings import PROJECT_DIR


def with_session_date(bars: pl.DataFrame) -> pl.DataFrame:
    if bars["timeframe"][0] == "1d":
        return bars.with_columns(pl.col("ts").dt.date().alias("session_date"))
    local = pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone("America/New_York")
    return bars.with_columns(local.dt.date().alias("session_date"))


work = Path(sys.argv[1])
work.mkdir(parents=True, exist_ok=True)
wh = work / "sample.duckdb"
if not wh.exists():
    src = SampleBarSource(20)
    daily = src.fetch_bars(None, DAILY_START, DAILY_END, "1d")
    intra = src.fetch_bars(None, INTRADAY_START, INTRADAY_END, "1m")
    with writer(wh) as con:
        upsert_bars(con, "raw.bars_daily", with_session_date(daily), "sample")
        upsert_bars(con, "raw.bars_intraday", with_session_date(intra), "sample")
rules = yaml.safe_load((PROJECT_DIR / "rules.yaml").read_text())
for s in rules["scans"]:
    if s["kind"] == "crp":
        s["params"].update(min_score=0, top_n=100000, min_avg_dollar_volume=0)
all_rules = work / "all.yaml"
all_rules.write_text(yaml.safe_dump(rules))
dbt_runner.run_dbt(["build", "--select", "+signals"], wh, load_rules(all_rules), target_path=work / "target")
con = duckdb.connect(str(wh), read_only=True)
print(con.sql("""with t as (select symbol, avg(close * volume) over (partition by symbol order by ts
  rows between 20 preceding and 1 preceding) as adv from intermediate.int_indicators where timeframe = '1d')
  select count(*) as daily_bars, round(100 * avg((adv < 5e6)::int), 2) as pct_adv_below_5M,
         min(adv) as min_adv, median(adv) as median_adv from t"""))
print(con.sql("select timeframe, count(*) bars from intermediate.int_indicators group by 1 order by 1"))
q = """
with s as (select score from marts.signals where scan = '{scan}')
select count(*) as scored_bars,
       round(100 * avg((score >= 50)::int), 1) as pct_ge50,
       round(100 * avg((score >= 55)::int), 1) as pct_ge55,
       round(100 * avg((score >= 60)::int), 1) as pct_ge60,
       round(100 * avg((score >= 65)::int), 1) as pct_ge65,
       round(100 * avg((score >= 70)::int), 1) as pct_ge70,
       round(100 * avg((score >= 80)::int), 1) as pct_ge80,
       min(score) as min_score, median(score) as median, max(score) as max_score
from s
"""
print("crp_daily (every bar >= $5, no floor):")
print(con.sql(q.format(scan="crp_daily")))
print(con.sql("""select score_bucket, count(*) n, round(100.0 * count(*) / sum(count(*)) over (), 1) as pct from (
  select floor(score / 10) * 10 as score_bucket from marts.signals where scan = 'crp_daily') group by 1 order by 1"""))
print(con.sql("""select count(distinct session_date) sessions,
  count(*) filter (where score >= 60) as bars_ge60,
  count(distinct session_date) filter (where score >= 60) as sessions_with_ge60
  from marts.signals where scan = 'crp_daily'"""))
print("intraday windows (open to 10:30):")
print(con.sql("select timeframe, count(*) n, round(100*avg((score>=60)::int),1) pct_ge60, round(100*avg((score>=70)::int),1) pct_ge70 from marts.signals where scan = 'crp_intraday' group by 1"))
