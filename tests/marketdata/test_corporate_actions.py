"""Corporate actions files through `trading actions load` (a real Dagster run into a real
warehouse) and `trading actions list`: checked whole, stored once, bad files refused with every
problem by line and nothing stored, a split that the stored bars contradict warned about."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from trading_pipeline.cli.main import app
from trading_pipeline.marketdata import warehouse
from trading_pipeline.settings import get_settings

runner = CliRunner()
GOOG = ("Date,Open,High,Low,Close,Volume\n2013-02-27,794.8,804.8,791.1,799.8,2522000\n"
        "2013-02-28,801.1,806.2,799.0,801.2,2265800\n2013-03-01,797.8,807.1,796.2,806.2,2175400\n")
# a real 2-for-1 on 2013-03-01: the close before 100, the open on the ex-date 50
SPLT = ("Date,Open,High,Low,Close,Volume\n2013-02-27,99,101,98,100,1000\n2013-02-28,100,101,99,100,1000\n"
        "2013-03-01,50,51,49,50.5,2000\n")


def cli(*args: str, code: int = 0):
    res = runner.invoke(app, list(args))
    assert res.exit_code == code, res.output
    return json.loads(res.stdout) if "--json" in args and code == 0 else res.output


def stored_count() -> int:
    con = warehouse.connect(get_settings().warehouse_path, read_only=True)
    try:
        have = con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name='raw' AND table_name='corporate_actions'").fetchone()[0]
        return con.execute("SELECT count(*) FROM raw.corporate_actions").fetchone()[0] if have else 0
    finally:
        con.close()


@pytest.fixture
def home(trading_home, tmp_path):
    for name, text in (("GOOG", GOOG), ("SPLT", SPLT)):
        f = tmp_path / f"{name}.csv"
        f.write_text(text)
        cli("ingest", str(f), "--json")
    return tmp_path


def test_a_file_loads_once_and_lists(home):
    f = home / "actions.csv"
    f.write_text("symbol,ex_date,kind,ratio,amount,pay_date\n"
                 "SPLT,2013-03-01,split,2,,\n"
                 "goog,2013-02-28,dividend,,0.5,2013-03-15\n"
                 "GOOG,2013-03-01,split,2,,\n")  # GOOG's bars do not halve: stored, with a warning
    out = cli("actions", "load", str(f), "--json")
    assert (out["loaded"], out["unchanged"]) == (3, 0)
    [warning] = out["warnings"]
    assert "split 2:1 on 2013-03-01 but the stored bars move by 1.004x" in warning and "GOOG" not in warning
    again = cli("actions", "load", str(f), "--json")
    assert (again["loaded"], again["unchanged"], again["warnings"]) == (0, 3, [])  # idempotent
    listed = cli("actions", "list", "--json")["actions"]
    assert [(a["symbol"], a["ex_date"], a["kind"]) for a in listed] == [
        ("GOOG", "2013-02-28", "dividend"), ("GOOG", "2013-03-01", "split"), ("SPLT", "2013-03-01", "split")]
    assert listed[0]["amount"] == 0.5 and listed[0]["pay_date"] == "2013-03-15"
    assert listed[1]["warning"] and listed[2]["warning"] is None and listed[2]["ratio"] == 2
    assert [a["kind"] for a in cli("actions", "list", "--symbol", "splt", "--json")["actions"]] == ["split"]
    assert "SPLT" in cli("actions", "list")


def test_a_bad_file_is_refused_whole_with_every_problem_by_line(home):
    f = home / "bad.csv"
    f.write_text("symbol,ex_date,kind,ratio,amount,new_symbol\n"
                 "GOOG,2013-02-28,dividend,,0.5,\n"  # fine, but the file is refused whole
                 "GOOG,2013-03-01,split,0,,\n"
                 "GOOG,2013-02-27,split,nan,,\n"
                 "GOOG,2013-03-02,delisting,,,\n"  # a Saturday
                 "NOPE,2013-03-01,split,2,,\n"
                 "GOOG,2013-02-28,dividend,,0.6,\n"  # the same dividend with another amount
                 "GOOG,2013-02-28,merger,,,\n"
                 "GOOG,2013-02-27,symbol_change,,,\n")
    out = cli("actions", "load", str(f), code=2)
    for said in ("line 3: a split needs ratio > 0", "line 4: a split needs ratio > 0",
                 "line 5: ex_date 2013-03-02 is not a XNYS session", "line 6: unknown symbol NOPE",
                 "line 7: dividend of GOOG on 2013-02-28 again with other values (line 2: amount=0.5; here: amount=0.6)",
                 "line 8: kind 'merger' must be one of split, dividend, symbol_change, delisting",
                 "line 9: a symbol change needs new_symbol", "nothing loaded"):
        assert said in out.replace("\n", " "), said
    assert stored_count() == 0


def test_an_action_stored_with_other_values_is_not_replaced(home):
    f = home / "a.csv"
    f.write_text("symbol,ex_date,kind,ratio\nSPLT,2013-03-01,split,2\n")
    cli("actions", "load", str(f), "--json")
    f.write_text("symbol,ex_date,kind,ratio\nSPLT,2013-03-01,split,3\n")
    out = cli("actions", "load", str(f), code=2)
    assert "split of SPLT on 2013-03-01 is stored with other values (ratio=2.0; the file: ratio=3.0)" in out.replace("\n", " ")
    assert [a["ratio"] for a in cli("actions", "list", "--json")["actions"]] == [2.0]


@pytest.mark.parametrize(("text", "said"), [
    ("symbol,date,kind\nGOOG,2013-03-01,split\n", "missing ['ex_date'], unknown ['date']"),
    ("symbol,ex_date,kind\n", "no actions in the file"),
])
def test_wrong_columns_are_refused_before_any_run(home, text, said):
    f = home / "cols.csv"
    f.write_text(text)
    assert said in cli("actions", "load", str(f), code=2).replace("\n", " ")
