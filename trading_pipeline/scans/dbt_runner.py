"""How to call dbt on the warehouse: the command line and environment, from any cwd.

Dagster (dagster-dbt ``DbtCliResource``) and the CLI both use these so a build always
sees the same project, profile, warehouse and rules. Nothing here bypasses dbt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trading_pipeline.marketdata.extensions import extension_directory
from trading_pipeline.scans.rules import Rules, dbt_vars, load_rules
from trading_pipeline.settings import DBT_PROJECT_DIR, PROJECT_DIR, get_settings

DEFAULT_RULES_FILE = PROJECT_DIR / "rules.yaml"


def dbt_executable() -> str:
    """The dbt next to this interpreter (the project's .venv), else the one on PATH.

    Next to the interpreter that is ``trading-dbt`` (cli/entry.py): the real ``dbt`` it
    becomes, unless the command runs in a warm worker, which then runs the build in a fork of
    itself with dbt already imported."""
    bindir = Path(sys.executable).parent
    for name in ("trading-dbt", "dbt"):
        if (bindir / name).exists():
            return str(bindir / name)
    found = shutil.which("dbt")
    if not found:
        raise FileNotFoundError("dbt executable not found next to python or on PATH")
    return found


def warehouse_for_dbt(warehouse_path: Path | str) -> str:
    """The warehouse as the dbt profile gets it (``TRADING_WAREHOUSE``): a file as an absolute
    path, ``md:``/``ducklake:`` locations unchanged. An in-memory database is refused: dbt runs
    in its own process and would build into an empty database of its own."""
    from trading_pipeline.marketdata import warehouse as wh
    loc = wh.location(warehouse_path)
    if isinstance(loc, Path):
        return str(loc.resolve())
    if wh.kind(loc) == "memory":
        raise wh.WarehouseLocationError(
            f"dbt runs in its own process and cannot build into the warehouse {loc!r} "
            f"({wh.describe(loc)}); use a DuckDB file, md:<db> or ducklake:<metadata>"
        )
    return loc


def dbt_env(
    warehouse_path: Path | str,
    base: Mapping[str, str] | None = None,
    target_path: Path | str | None = None,
) -> dict[str, str]:
    """Environment for a dbt process: profile dir, warehouse path, no telemetry.

    ``target_path`` moves dbt's target/ and logs/ out of the project (tests, parallel runs).
    """
    env = dict(os.environ if base is None else base)
    if target_path is not None:
        env["DBT_TARGET_PATH"] = str(Path(target_path))
        env["DBT_LOG_PATH"] = str(Path(target_path) / "logs")
    env.update(
        {
            "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
            "DBT_PROJECT_DIR": str(DBT_PROJECT_DIR),
            "TRADING_WAREHOUSE": warehouse_for_dbt(warehouse_path),
            "TRADING_DUCKDB_EXTENSIONS": str(extension_directory()),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
    )
    return env


def vars_json(
    rules: Rules | Path | str | None = None, *, warehouse: str | None = None,
    full_tests: bool | None = None,
) -> str:
    """rules (a Rules, a path, or None for the repo's rules.yaml) as a --vars JSON string; with
    ``warehouse`` (a :func:`warehouse_for_dbt` location) the profile's ``var('warehouse')``;
    with ``full_tests`` the ``full_tests`` var (True: data tests check every row, not only the
    build's new rows; dbt_project/macros/test_scope.sql)."""
    if rules is None:
        rules = DEFAULT_RULES_FILE
    if not isinstance(rules, Rules):
        rules = load_rules(rules)
    out = dbt_vars(rules)
    out["price_adjustment"] = get_settings().price_adjustment
    if warehouse is not None:
        out["warehouse"] = warehouse
        out["duckdb_extensions"] = str(extension_directory())
    if full_tests is not None:
        out["full_tests"] = bool(full_tests)
    return json.dumps(out, separators=(",", ":"))


def dbt_args(args: Sequence[str], rules: Rules | Path | str | None = None) -> list[str]:
    """dbt arguments (without the executable) with --project-dir, --profiles-dir and --vars.

    For dagster-dbt: ``dbt.cli(dbt_args(["build"]), context=context)`` with a
    ``DbtCliResource(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)`` whose
    process has ``TRADING_WAREHOUSE`` set (see ``dbt_env``).
    """
    out = list(args)
    if "--project-dir" not in out:
        out += ["--project-dir", str(DBT_PROJECT_DIR)]
    if "--profiles-dir" not in out:
        out += ["--profiles-dir", str(DBT_PROJECT_DIR)]
    if out and out[0] in {"build", "run", "test", "compile", "parse", "docs", "ls", "list", "show"}:
        if "--vars" not in out:
            out += ["--vars", vars_json(rules)]
    return out


def dbt_target(warehouse_path: Path | str) -> str:
    """The profile's output for this warehouse: ``lake`` (a DuckLake attached as ``lake``, the
    name every reader gives it) or ``local`` (a DuckDB file or another location as the path)."""
    from trading_pipeline.marketdata import warehouse as wh
    return "lake" if wh.is_lake(warehouse_path) else "local"


def prepare_warehouse(warehouse_path: Path | str) -> None:
    """Create a lake that does not exist yet with its data path (dbt would create one with
    DuckLake's defaults)."""
    from trading_pipeline.marketdata import warehouse as wh
    if wh.is_lake(warehouse_path) and not wh.exists(warehouse_path):
        wh.connect(warehouse_path).close()


def dbt_command(
    args: Sequence[str], warehouse_path: Path | str, rules: Rules | Path | str | None = None
) -> list[str]:
    """Full argv for ``subprocess`` (run it with ``env=dbt_env(warehouse_path)``)."""
    out = [dbt_executable(), *dbt_args(args, rules)]
    if "--target" not in out:
        out += ["--target", dbt_target(warehouse_path)]
    return out


def run_dbt(
    args: Sequence[str],
    warehouse_path: Path | str,
    rules: Rules | Path | str | None = None,
    check: bool = True,
    capture: bool = True,
    target_path: Path | str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run dbt to completion from any cwd; raise with dbt's output when it fails."""
    prepare_warehouse(warehouse_path)
    proc = subprocess.run(
        dbt_command(args, warehouse_path, rules),
        env=dbt_env(warehouse_path, target_path=target_path),
        cwd=str(DBT_PROJECT_DIR),
        capture_output=capture,
        text=True,
    )
    if check and proc.returncode != 0:
        raise DbtError(args, proc.returncode, (proc.stdout or "") + (proc.stderr or ""))
    return proc


class DbtError(RuntimeError):
    def __init__(self, args: Sequence[str], returncode: int, output: str) -> None:
        super().__init__(f"dbt {' '.join(args[:1])} failed (exit {returncode}):\n{output[-4000:]}")
        self.returncode = returncode
        self.output = output


def build(
    warehouse_path: Path | str,
    rules: Rules | Path | str | None = None,
    select: str | None = None,
    extra: Sequence[str] = (),
    target_path: Path | str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``dbt build`` of the whole project (or ``select``) on ``warehouse_path``."""
    args: list[str] = ["build", *extra]
    if select:
        args += ["--select", select]
    return run_dbt(args, warehouse_path, rules, target_path=target_path)


def scan_vars(rules: Rules | Path | str | None = None) -> dict[str, Any]:
    return json.loads(vars_json(rules))
