"""One ``not_null_columns`` test per model still blocks a build, names the NULL column, and
reads only the rows the build changed (dbt_project/macros/not_null_columns.sql).

One small DuckLake (2 daily symbols, four months) goes through real ``dbt build`` / ``dbt
test`` runs and one real Dagster scan run:

1. first build: every test passes, one not-null test per model instead of one per column;
2. an OLD indicator row loses its ``bar_index`` (written outside the pipeline), then one new
   session: the incremental build passes (the old row is not among the changed ones);
3. ``dbt test`` with ``full_tests`` and the scan's Dagster run with ``full_tests`` (as
   ``trading scan --full-tests`` gives it) fail, naming ``bar_index``;
4. a NEW indicator row without a ``session_bar_index``, stamped as written by a later build
   (the raw tables refuse NULLs, so it is planted where a faulty model would write it): the
   next build fails naming ``session_bar_index`` (not the old ``bar_index``) and builds
   nothing downstream of it.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from tests.scans.dbt_fixtures import home_settings, lake, load, synthetic
from trading_pipeline import runs
from trading_pipeline.marketdata.warehouse import writer
from trading_pipeline.scans import dbt_runner
from trading_pipeline.settings import DBT_PROJECT_DIR

OLD_ROW = "symbol = 'SYN0000' and timeframe = '1d' and ts = '2023-02-15'"
IND_NULLS = "not_null_columns_int_indicators"


def run(warehouse: str, target: Path, *args: str) -> dict[str, dict]:
    """dbt ``args`` (failure allowed) -> {node name: its run result}."""
    dbt_runner.run_dbt(list(args), warehouse, check=False, target_path=target)
    results = json.loads((target / "run_results.json").read_text())["results"]
    return {r["unique_id"].split(".")[2]: r for r in results}


def failed(results: dict[str, dict]) -> dict[str, str]:
    """{test name: message} of the tests that did not pass."""
    return {name: r["message"] for name, r in results.items()
            if r["unique_id"].startswith("test.") and r["status"] in {"fail", "error"}}


def sql(warehouse: str, statement: str) -> None:
    with writer(warehouse) as con:
        con.execute(statement)


@pytest.fixture(scope="module")
def steps(tmp_path_factory, dbt_target) -> dict:
    home = tmp_path_factory.mktemp("home_not_null")
    wh = lake(home / "warehouse")
    bars = synthetic(2, date(2023, 1, 2), date(2023, 4, 28), "1d")
    sessions = sorted(bars["session_date"].unique())
    load(wh, bars.filter(pl.col("session_date") < sessions[-1]))
    out = {"first": run(wh, dbt_target, "build")}

    # 2. an old row loses a not-null value; computed_at unchanged: not part of the next build
    sql(wh, f"update intermediate.int_indicators set bar_index = null where {OLD_ROW}")
    load(wh, bars.filter(pl.col("session_date") == sessions[-1]))
    out["incremental"] = run(wh, dbt_target, "build")

    # 3. every row: dbt by hand, and the scan's Dagster run as `trading scan --full-tests` runs it
    out["full"] = run(wh, dbt_target, "test", "--vars", dbt_runner.vars_json(full_tests=True))
    with home_settings(home) as settings:
        result = runs.run_job("scan_daily_stored", settings,
                              run_config={"ops": {"dbt_models": {"config": {"full_tests": True}}}})
        out["dagster_full"] = (result.success, runs.failed_checks(result), runs.failure_message(result))

    # 4. a new indicator row without its session_bar_index, newer than any build's rows
    later = "(select max(computed_at) + interval 1 second from intermediate.int_indicators)"
    sql(wh, f"""insert into intermediate.int_indicators
                 select * replace (ts + interval 7 day as ts, null as session_bar_index, {later} as computed_at)
                 from intermediate.int_indicators where symbol = 'SYN0001' and timeframe = '1d'
                 and ts = '{sessions[-1]}'""")
    out["new_null"] = run(wh, dbt_target, "build")
    return out


def test_one_not_null_test_per_model(steps):
    results = steps["first"]
    tests = {name: r["status"] for name, r in results.items() if r["unique_id"].startswith("test.")}
    assert set(tests.values()) == {"pass"}, failed(results)
    assert not [t for t in tests if t.startswith("not_null_") and not t.startswith("not_null_columns_")]
    assert {t for t in tests if t.startswith("not_null_columns_")} >= {  # (and those of newer models)
        "not_null_columns_stg_bars", "not_null_columns_stg_symbols", "not_null_columns_stg_corporate_actions",
        "not_null_columns_int_indicators", "not_null_columns_int_adjustment_factors",
        "not_null_columns_indicators_daily", "not_null_columns_indicators_intraday", "not_null_columns_signals",
        "not_null_columns_scan_results", "not_null_columns_alerts", "not_null_columns_dim_symbols",
    }
    assert "source_not_null_raw_symbols_symbol" in tests  # a source's one column: dbt's own test


def test_an_old_null_is_not_read_by_an_incremental_build(steps):
    results = steps["incremental"]
    assert not failed(results)
    assert results["int_indicators"]["status"] == "success"
    assert results[IND_NULLS]["status"] == "pass"


def test_full_tests_find_the_old_null_and_name_its_column(steps):
    failures = failed(steps["full"])
    assert set(failures) == {IND_NULLS}
    assert "1 row has NULL where none is allowed: bar_index in 1." in failures[IND_NULLS]


def test_the_scan_run_with_full_tests_fails_on_the_named_column(steps):
    success, checks, message = steps["dagster_full"]
    assert not success
    assert checks == [f"intermediate/int_indicators:{IND_NULLS}"], message
    assert "bar_index in 1" in message


def test_a_new_null_blocks_the_build_before_the_indicators(steps):
    results = steps["new_null"]
    failures = failed(results)
    assert set(failures) == {IND_NULLS}
    # the new row only: the old row's bar_index (step 2) is still not read
    assert "1 row has NULL where none is allowed: session_bar_index in 1." in failures[IND_NULLS]
    assert results["indicators_daily"]["status"] == "skipped"
    assert results["signals"]["status"] == "skipped"


@pytest.mark.parametrize("columns", ["[]", "symbol"])
def test_columns_must_be_a_list(tmp_path, columns):
    """A test declared without a list of columns is refused at parse, saying how to write it."""
    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    (project / "models" / "staging" / "probe.sql").write_text("select 1 as symbol\n")
    (project / "models" / "staging" / "_probe.yml").write_text(
        "version: 2\nmodels:\n  - name: probe\n    data_tests:\n"
        f"      - not_null_columns: {{arguments: {{columns: {columns}}}}}\n")
    proc = dbt_runner.run_dbt(["parse", "--project-dir", str(project)], lake(tmp_path / "wh"),
                              check=False, target_path=tmp_path / "target")
    assert proc.returncode != 0
    assert "not_null_columns needs `columns`, a non-empty list of column names" in proc.stdout
