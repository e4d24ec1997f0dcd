"""Views are re-created only when their compiled SQL changed (dbt_project/macros/view_if_changed.sql):
real ``dbt build`` runs on a small DuckLake. A second build leaves every view as it was (same
catalog entry, no DDL) and still reads the newest rows; a changed var re-creates the view it
changes, and only that one; ``--full-refresh`` re-creates them all."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import polars as pl

from tests.scans.dbt_fixtures import lake, load, query, synthetic
from trading_pipeline.scans import dbt_runner

VIEWS = {"stg_bars", "stg_symbols", "stg_corporate_actions", "int_bars_adjusted", "indicators_daily",
         "alerts", "scan_results"}


def build(warehouse: str, target: Path, *args: str) -> dict[str, dict]:
    dbt_runner.run_dbt(["build", *args], warehouse, target_path=target)
    results = json.loads((target / "run_results.json").read_text())["results"]
    return {r["unique_id"].split(".")[2]: r for r in results}


def views(catalog: Path) -> dict[str, tuple[int, int]]:
    """{view: (its catalog id, the lake snapshot that created it)} from the DuckLake catalog."""
    con = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT view_name, view_id, begin_snapshot FROM ducklake_view "
                           "WHERE end_snapshot IS NULL").fetchall()
    finally:
        con.close()
    return {name: (vid, snap) for name, vid, snap in rows}


def with_vars(**extra) -> str:
    return json.dumps({**json.loads(dbt_runner.vars_json()), **extra})


def test_unchanged_views_are_left_alone_and_changed_ones_rebuilt(tmp_path, dbt_target):
    home = tmp_path / "home"
    wh = lake(home / "warehouse")
    bars = synthetic(2, date(2023, 1, 2), date(2023, 3, 31), "1d")
    sessions = sorted(bars["session_date"].unique())
    load(wh, bars.filter(pl.col("session_date") < sessions[-1]))
    first = build(wh, dbt_target)
    assert VIEWS <= set(first) and all(first[v]["status"] == "success" for v in VIEWS)
    comments = dict(query(wh, "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal").rows())
    assert all(str(comments[v]).startswith("dbt-view:") for v in VIEWS), comments
    catalog = home / "warehouse" / "catalog.sqlite"
    before = views(catalog)

    load(wh, bars.filter(pl.col("session_date") == sessions[-1]))
    second = build(wh, dbt_target)
    assert all(second[v]["status"] == "success" for v in VIEWS)
    assert views(catalog) == before  # no view was dropped or created
    newest = query(wh, "SELECT max(session_date) AS d FROM marts.indicators_daily")["d"][0]
    assert newest == sessions[-1]  # and they read the rows loaded since

    # a var the adjusted view compiles in: that view is re-created, the others stay
    third = build(wh, dbt_target, "--vars", with_vars(price_adjustment="none"))
    assert third["int_bars_adjusted"]["status"] == "success"
    after = views(catalog)
    changed = {v for v in VIEWS if after[v] != before[v]}
    assert changed == {"int_bars_adjusted"}, changed
    basis = query(wh, "SELECT DISTINCT adjustment FROM intermediate.int_bars_adjusted")["adjustment"].to_list()
    assert basis == ["none"]

    build(wh, dbt_target, "--full-refresh", "--vars", with_vars(price_adjustment="none"))
    refreshed = views(catalog)
    assert all(refreshed[v] != after[v] for v in VIEWS)
