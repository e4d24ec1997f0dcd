"""dbt data tests on an incremental build check the rows it changed; ``full_tests`` checks all.

One small DuckLake (3 daily symbols, half a year) goes through the steps of a scan's life,
with real ``dbt build`` / ``dbt test`` runs (dbt_project/macros/test_scope.sql):

1. first build of the history (full: every row tested);
2. bad rows planted in OLD history: a duplicate indicator row, a signal of an unknown kind;
3. one new session and an incremental ``dbt build``: its tests pass (they read the new rows);
4. ``dbt test`` with ``full_tests: true``: the old bad rows fail; so does the scan's Dagster
   run (``dbt_models``) given ``full_tests`` as ``trading scan --full-tests`` gives it, and
   the same run without it passes;
5. one more session plus a raw bar re-inserted with a new ``ingested_at`` (a NEW row with an
   OLD key): the incremental build fails on uniqueness and stops before the indicators;
6. NEW bad rows in the models (duplicates of old keys, a null): the default tests fail.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from tests.scans.dbt_fixtures import home_settings, lake, load, synthetic
from trading_pipeline import runs
from trading_pipeline.marketdata.warehouse import writer
from trading_pipeline.scans import dbt_runner

OLD_DUP = ("SYN0000", "2023-02-15")  # planted in step 2
NEW_DUP = ("SYN0001", "2023-03-15")  # its key re-used by a new row in steps 5 and 6

STG_UNIQUE = "unique_combination_stg_bars_symbol__timeframe__ts"
IND_UNIQUE = "unique_combination_int_indicators_symbol__timeframe__ts"
DAILY_UNIQUE = "unique_combination_indicators_daily_symbol__ts"
SIGNALS_UNIQUE = "unique_combination_signals_scan__symbol__timeframe__ts__kind"
SIGNALS_KIND = "accepted_values_signals_kind__breakout_up__breakout_down__crp_long__crp_short__cpr_narrow__expr_long__expr_short"
ALERTS_UNIQUE = "unique_alerts_alert_id"
IND_NULLS = "not_null_columns_int_indicators"  # one not-null test per model, every column
DAILY_NULLS = "not_null_columns_indicators_daily"


def run(warehouse: str, target: Path, *args: str) -> dict[str, str]:
    """dbt ``args`` (failure allowed) -> {node name: status} from its run_results.json; tests'
    names start with ``test:``."""
    dbt_runner.run_dbt(list(args), warehouse, check=False, target_path=target)
    results = json.loads((target / "run_results.json").read_text())["results"]
    return {
        ("test:" if r["unique_id"].startswith("test.") else "") + r["unique_id"].split(".")[2]: r["status"]
        for r in results
    }


def data_tests(results: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("test:"): v for k, v in results.items() if k.startswith("test:")}


def failed(results: dict[str, str]) -> set[str]:
    return {k for k, v in data_tests(results).items() if v in {"fail", "error"}}


def sql(warehouse: str, *statements: str) -> None:
    with writer(warehouse) as con:
        for s in statements:
            con.execute(s)


def scan_runs(home: Path) -> tuple[list[str] | None, list[str] | None]:
    """The scan job of a home with stored bars, as ``trading scan`` runs it, without and with
    ``--full-tests``: each run's failed checks (None: the run succeeded)."""
    out = []
    with home_settings(home) as settings:
        for config in (None, {"ops": {"dbt_models": {"config": {"full_tests": True}}}}):
            r = runs.run_job("scan_daily_stored", settings, run_config=config)
            out.append(None if r.success else runs.failed_checks(r))
    return out[0], out[1]


@pytest.fixture(scope="module")
def steps(tmp_path_factory, dbt_target) -> dict:
    home = tmp_path_factory.mktemp("home_test_scope")
    wh = lake(home / "warehouse")  # the home's own warehouse, for its Dagster runs (step 4)
    bars = synthetic(3, date(2023, 1, 2), date(2023, 6, 30), "1d")
    sessions = sorted(bars["session_date"].unique())
    load(wh, bars.filter(pl.col("session_date") < sessions[-2]))
    out = {"first": run(wh, dbt_target, "build")}

    # 2. old bad rows: a duplicate indicator row, a signal of an unknown kind (score 0: no alert)
    sql(wh,
        f"""insert into intermediate.int_indicators select * from intermediate.int_indicators
            where symbol = '{OLD_DUP[0]}' and timeframe = '1d' and ts = '{OLD_DUP[1]}'""",
        """insert into marts.signals select * replace ('bogus' as kind, 0.0 as score)
           from marts.signals where session_date < '2023-03-01' order by ts, scan, symbol limit 1""")
    load(wh, bars.filter(pl.col("session_date") == sessions[-2]))
    out["incremental"] = run(wh, dbt_target, "build")
    out["full"] = run(wh, dbt_target, "test", "--vars", dbt_runner.vars_json(full_tests=True))
    out["dagster"], out["dagster_full"] = scan_runs(home)

    # 5. the last session, and an old bar written again (new ingested_at: a new row, old key)
    load(wh, bars.filter(pl.col("session_date") == sessions[-1]))
    old_bar = f"symbol = '{NEW_DUP[0]}' and timeframe = '1d' and ts = '{NEW_DUP[1]}'"
    newest = "(select max(ingested_at) from raw.bars_daily)"
    sql(wh, f"insert into raw.bars_daily select * replace ({newest} as ingested_at) from raw.bars_daily where {old_bar}")
    out["new_raw_dup"] = run(wh, dbt_target, "build")
    sql(wh, f"delete from raw.bars_daily where {old_bar} and ingested_at = {newest}")

    # 6. new bad rows in the models: duplicates of old keys (an indicator row, an alerting
    # signal) and a null, stamped as written by a later build than any before
    later = "(select max(computed_at) + interval 1 second from intermediate.int_indicators)"
    null_ts = sessions[-1] + timedelta(days=3)
    sql(wh,
        f"""insert into intermediate.int_indicators
            select * replace ({later} as computed_at) from intermediate.int_indicators where {old_bar}
            union all
            select * replace ('{null_ts}'::timestamp as ts, null as session_date, {later} as computed_at)
            from intermediate.int_indicators where {old_bar}""",
        """insert into marts.signals select * replace ((select max(computed_at) from intermediate.int_indicators) as as_of)
           from marts.signals s where session_date < '2023-06-01' and exists (
             select 1 from marts.alerts a where a.scan = s.scan and a.symbol = s.symbol and a.ts = s.ts and a.kind = s.kind)
           order by ts desc limit 1""")
    out["new_bad_rows"] = run(wh, dbt_target, "test")
    return out


def test_first_build_passes_every_test(steps):
    tests = data_tests(steps["first"])
    assert len(tests) > 25 and set(tests.values()) == {"pass"}, failed(tests)


def test_incremental_build_does_not_read_old_history(steps):
    """The old duplicate and the old unknown kind are not among the rows this build changed."""
    results = steps["incremental"]
    assert set(data_tests(results)) == set(data_tests(steps["first"]))  # every test ran
    assert not failed(results)
    assert results["int_indicators"] == "success" and results["signals"] == "success"


def test_full_tests_read_every_row(steps):
    assert failed(steps["full"]) == {IND_UNIQUE, DAILY_UNIQUE, SIGNALS_KIND}


def test_scan_full_tests_reach_dbt_through_dagster(steps):
    assert steps["dagster"] is None  # the default scan run: scoped tests, success
    # dbt build stops below the first failed test: the marts' tests are skipped
    assert steps["dagster_full"] == [f"intermediate/int_indicators:{IND_UNIQUE}"]


def test_a_new_row_with_an_old_key_fails_the_incremental_build(steps):
    results = steps["new_raw_dup"]
    assert failed(results) == {STG_UNIQUE}
    assert results["int_indicators"] == "skipped"  # the bad bars never reach the indicators


def test_new_bad_rows_fail_incremental_tests(steps):
    """The duplicates share their key with old rows: the uniqueness tests read those too.
    The old bad rows (step 2) are still there and still not reported."""
    assert failed(steps["new_bad_rows"]) == {
        IND_UNIQUE, DAILY_UNIQUE, IND_NULLS, DAILY_NULLS, SIGNALS_UNIQUE, ALERTS_UNIQUE,
    }
