"""Fixtures for the dbt project tests: a dbt runner on temp DuckDB warehouses.

Every test runs the real ``dbt`` executable through ``trading_pipeline.scans.dbt_runner``;
dbt's target/ and logs/ go to a temp dir so the tests never touch the project's own
target/ (or collide with a build running elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from trading_pipeline.scans import dbt_runner
from trading_pipeline.scans.rules import Rules

DbtRun = Callable[..., str]


@pytest.fixture(scope="session")
def dbt_target(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dbt_target")


@pytest.fixture(scope="session")
def dbt(dbt_target) -> DbtRun:
    """dbt(warehouse, "build", rules=None, *extra) -> dbt's stdout; raises on failure."""

    def run(
        warehouse: Path, command: str = "build", rules: Rules | Path | None = None,
        extra: Sequence[str] = (),
    ) -> str:
        proc = dbt_runner.run_dbt(
            [command, *extra], warehouse, rules, target_path=dbt_target
        )
        return proc.stdout

    return run
