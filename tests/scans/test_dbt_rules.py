"""rules.yaml: validation with clear errors, dbt vars, and thresholds that change signals."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from tests.scans.dbt_fixtures import load, query, synthetic
from trading_pipeline.scans import dbt_runner
from trading_pipeline.scans.rules import RulesError, dbt_vars, load_rules
from trading_pipeline.settings import DBT_PROJECT_DIR, PROJECT_DIR

RULES = PROJECT_DIR / "rules.yaml"


def write_rules(tmp_path: Path, scans: list[dict]) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"scans": scans}))
    return path


def default_scans() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["scans"]


def test_repo_rules_load_and_cover_every_kind():
    rules = load_rules(RULES)
    assert {s.kind for s in rules.scans} == {"breakout", "crp", "cpr"}
    assert {s.timeframe for s in rules.scans} == {"daily", "intraday"}
    crp = next(s for s in rules.scans if s.name == "crp_daily")
    assert crp.params.top_n == 3 and crp.params.min_score == 60
    assert crp.params.price_band == (5, None) and crp.params.volume_band is None
    assert crp.params.rvol_tiers == (2.0, 1.5, 1.0) and crp.params.rvol_lookback == 20
    assert crp.params.min_avg_dollar_volume == 5_000_000
    assert crp.params.range_tiers == (0.03, 0.045) and crp.params.change_tiers == (0.01, 0.0)
    assert crp.params.close_within == 0.02


def test_crp_old_rules_still_load_and_new_keys_default(tmp_path):
    """Issue 21.5: a rules file written for the old defaults (price and volume bands, no
    relative-volume keys) still loads; the new keys take their defaults, the volume band
    stays an absolute filter, and the gone absolute volume tiers get an error naming rvol_tiers."""
    old = [{"name": "crp_daily", "kind": "crp", "timeframe": "daily",
            "params": {"min_score": 30, "price_band": [50, 2000], "volume_band": [50_000, 5_000_000], "top_n": 3}},
           {"name": "crp_intraday", "kind": "crp", "timeframe": "intraday", "params": {"cutoff": "10:30"}}]
    daily, intraday = dbt_vars(load_rules(write_rules(tmp_path, old)))["scans"]
    assert (daily["min_price"], daily["max_price"], daily["min_volume"], daily["max_volume"]) == (50, 2000, 50_000, 5_000_000)
    assert daily["rvol_lookback"] == 20 and daily["rvol_tiers"] == [2.0, 1.5, 1.0]
    assert daily["min_avg_dollar_volume"] == 5_000_000 and intraday["min_avg_dollar_volume"] == 1_000_000
    assert intraday["min_score"] == 60 and intraday["min_price"] == 5 and intraday["max_volume"] is None
    old[0]["params"]["volume_tiers"] = [25_000, 50_000, 75_000]
    with pytest.raises(RulesError, match="volume_tiers is no longer used.*set rvol_tiers"):
        load_rules(write_rules(tmp_path, old))
    for key, bad, msg in [("rvol_tiers", [1.0, 1.5, 2.0], "three falling"), ("range_tiers", [0.05, 0.03], "two rising"),
                          ("change_tiers", [-0.01, 0.0], "two falling"), ("rvol_lookback", 0, "must be >= 1"),
                          ("min_avg_dollar_volume", -1, "must be >= 0")]:
        scans = [dict(old[1], params={key: bad})]
        with pytest.raises(RulesError, match=f"scan 'crp_intraday': {key} .*{msg}"):
            load_rules(write_rules(tmp_path, scans))


def test_dbt_project_defaults_match_rules_yaml():
    """dbt run without --vars behaves like the repo's rules.yaml."""
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    assert project["vars"] == dbt_vars(load_rules(RULES))


@pytest.mark.parametrize(
    "change,message",
    [
        ({"params": {"lookback": 0}}, "rules.yaml: scan 'breakout_daily': lookback must be >= 2, got 0"),
        ({"params": {"volume_multiple": -1}}, "rules.yaml: scan 'breakout_daily': volume_multiple must be > 0, got -1"),
        ({"kind": "moonshot"}, "rules.yaml: scan 'breakout_daily': kind input should be 'breakout', 'crp', 'cpr' or 'expr', got 'moonshot'"),
        ({"timeframe": "weekly"}, "rules.yaml: scan 'breakout_daily': timeframe input should be 'daily' or 'intraday', got 'weekly'"),
        ({"params": {"top_n": 3}}, "rules.yaml: scan 'breakout_daily': params ['top_n'] do not apply to kind 'breakout'"),
        ({"filters": {"min_prize": 3}}, "rules.yaml: scan 'breakout_daily': min_prize is not a known field"),
        ({"universe": []}, "rules.yaml: scan 'breakout_daily': universe "),
    ],
)
def test_validation_errors_name_file_scan_and_field(tmp_path, change, message):
    scans = default_scans()
    first = scans[0]
    for key, value in change.items():
        if isinstance(value, dict):
            first.setdefault(key, {}).update(value)
        else:
            first[key] = value
    with pytest.raises(RulesError) as err:
        load_rules(write_rules(tmp_path, scans))
    assert message in str(err.value)


def test_crp_band_and_duplicate_names_and_bad_yaml(tmp_path):
    scans = default_scans()
    scans[2]["params"]["price_band"] = [2000, 50]
    scans.append(dict(scans[0]))
    with pytest.raises(RulesError) as err:
        load_rules(write_rules(tmp_path, scans))
    text = str(err.value)
    assert "scan 'crp_daily': price_band must be [low, high]" in text
    assert "scan 'breakout_daily': name is used by another scan" in text
    bad = tmp_path / "broken.yaml"
    bad.write_text("scans: [\n")
    with pytest.raises(RulesError, match="broken.yaml: not valid YAML"):
        load_rules(bad)
    with pytest.raises(RulesError, match="rules file not found"):
        load_rules(tmp_path / "missing.yaml")


def test_dbt_vars_resolve_defaults_and_fingerprints(tmp_path):
    scans = default_scans()
    v1 = dbt_vars(load_rules(write_rules(tmp_path, scans)))
    scans[0]["params"]["volume_multiple"] = 2.0
    scans[0]["universe"] = ["GOOG"]
    v2 = dbt_vars(load_rules(write_rules(tmp_path, scans)))
    a, b = v1["scans"][0], v2["scans"][0]
    assert a["volume_multiple"] == 1.5 and b["volume_multiple"] == 2.0
    assert b["symbols"] == ["GOOG"] and a["symbols"] is None
    assert a["fingerprint"] != b["fingerprint"]
    assert v1["scans"][1]["fingerprint"] == v2["scans"][1]["fingerprint"]
    intraday = next(s for s in v1["scans"] if s["name"] == "crp_intraday")
    assert intraday["cutoff"] == "10:30:00" and "1m" in intraday["timeframes"]


def test_dbt_command_runs_from_anywhere(tmp_path):
    cmd = dbt_runner.dbt_command(["build"], tmp_path / "w.duckdb")
    assert cmd[0].endswith("dbt") and cmd[1] == "build"
    assert "--project-dir" in cmd and "--profiles-dir" in cmd and "--vars" in cmd
    env = dbt_runner.dbt_env(tmp_path / "w.duckdb")
    assert env["TRADING_WAREHOUSE"] == str((tmp_path / "w.duckdb").resolve())
    assert env["DBT_SEND_ANONYMOUS_USAGE_STATS"] == "false"
    assert env["DBT_PROFILES_DIR"] == str(DBT_PROJECT_DIR)


def signal_rows(warehouse) -> list[tuple]:
    return query(
        warehouse,
        "select * exclude (as_of) from marts.signals order by scan, symbol, timeframe, ts, kind",
    ).rows()


def test_changing_thresholds_changes_the_next_build(tmp_path, dbt):
    """Incremental build after a rules change == a fresh build with the new rules."""
    warehouse = tmp_path / "w.duckdb"
    load(warehouse, synthetic(6, date(2022, 1, 1), date(2023, 6, 30), "1d"))
    dbt(warehouse, "run", RULES)
    before = query(warehouse, "select scan, count(*) as n from marts.signals group by scan")
    before = dict(before.rows())

    scans = default_scans()
    scans[0]["params"]["volume_multiple"] = 1.0  # breakout_daily: more breakouts
    scans[2]["params"]["top_n"] = 1  # crp_daily: one per session
    scans[4]["params"]["lookback"] = 10  # cpr: a shorter window (indicator recomputed)
    new_rules = write_rules(tmp_path, scans)
    dbt(warehouse, "run", new_rules)  # incremental: no new bars, only new rules
    after = dict(query(warehouse, "select scan, count(*) as n from marts.signals group by scan").rows())
    assert after["breakout_daily"] > before["breakout_daily"]
    assert after["crp_daily"] < before["crp_daily"]
    per_session = query(
        warehouse, "select max(n_signals) as m from marts.scan_results where scan = 'crp_daily'"
    )["m"][0]
    assert per_session == 1
    weak = query(
        warehouse,
        "select count(*) as n from marts.signals s join intermediate.int_indicators i "
        "using (symbol, timeframe, ts) where s.scan = 'breakout_daily' "
        "and i.volume < 1.5 * i.volume_avg_20",
    )["n"][0]
    assert weak > 0
    assert set(query(warehouse, "select distinct cpr_lookback from intermediate.int_indicators")["cpr_lookback"]) == {10}

    fresh = tmp_path / "fresh.duckdb"
    load(fresh, synthetic(6, date(2022, 1, 1), date(2023, 6, 30), "1d"))
    dbt(fresh, "run", new_rules)
    assert signal_rows(warehouse) == signal_rows(fresh)


def test_rules_table_piped_is_not_folded_at_80_columns(tmp_path):
    """Issue 20.7: output to a pipe or file was cut to 80 columns (parameters ended in '…')."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["TRADING_HOME"] = str(tmp_path / "home")
    out = subprocess.run([sys.executable, "-m", "trading_pipeline.cli.main", "rules"], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    crp = next(ln for ln in out.splitlines() if "crp_daily" in ln)
    assert "rvol_tiers" in crp and "…" not in crp, crp
    for shown in ("min_score=60", "min_price=5", "min_avg_dollar_volume=5000000", "rvol_lookback=20",
                  "rvol_tiers=[2.0, 1.5, 1.0]", "range_tiers=[0.03, 0.045]", "change_tiers=[0.01, 0.0]",
                  "close_within=0.02"):
        assert shown in crp, (shown, crp)
    assert max(len(ln) for ln in out.splitlines()) > 80
