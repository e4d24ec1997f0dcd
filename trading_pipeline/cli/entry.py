"""The ``trading`` and ``trading-dbt`` entry points, and the warm worker's process.

Kept apart from ``cli/main.py`` (the Typer app) so that handing a command to a running worker
(``cli/worker.py``) costs no more than this module and the settings: the app and its commands
are imported only when the command runs here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from trading_pipeline.cli.worker import ENV_SOCKET, Worker, WorkerError, delegate


def run_trading(argv: list[str]) -> None:
    from trading_pipeline.cli.main import app

    app(args=argv[1:], prog_name="trading")


def run_dbt(argv: list[str]) -> None:
    from dbt.cli.main import cli

    cli.main(args=argv[1:], prog_name="dbt")


def warm() -> None:
    """What every `trading` command in the worker would otherwise build again: the settings
    and the Dagster definitions (our defs modules, the dbt manifest). Nothing that starts a
    thread pool (polars, DuckDB): a fork keeps no threads but their locks (the worker checks)."""
    from trading_pipeline import runs
    from trading_pipeline.settings import get_settings

    get_settings()
    runs.definitions()


def main() -> None:
    """``trading``: hand the command to this home's worker if one runs, else run it here."""
    args = sys.argv[1:]
    if not (args and args[0] == "worker"):
        code = delegate("trading", ["trading", *args])
        if code is not None:
            sys.exit(code)
    from trading_pipeline.cli.main import app

    app()


def _real_dbt() -> str:
    import shutil

    here = Path(sys.executable).parent / "dbt"
    if here.exists():
        return str(here)
    found = shutil.which("dbt")
    if not found:
        raise SystemExit("dbt executable not found next to python or on PATH")
    return found


def dbt_main() -> None:
    """``trading-dbt``: the dbt dagster-dbt starts. In a worker's child it runs in a fork of the
    worker (dbt already imported); anywhere else it becomes the real ``dbt`` (exec)."""
    args = sys.argv[1:]
    if os.environ.get(ENV_SOCKET):
        code = delegate("dbt", ["dbt", *args], Path(os.environ[ENV_SOCKET]))
        if code is not None:
            sys.exit(code)
    dbt = _real_dbt()
    os.execv(dbt, [dbt, *args])


def serve(path: Path) -> None:
    Worker(path, {"trading": run_trading, "dbt": run_dbt}, warm=warm).serve()


if __name__ == "__main__":  # `python -m trading_pipeline.cli.entry SOCKET`: what `trading worker start` runs
    try:
        serve(Path(sys.argv[1]))
    except WorkerError as exc:
        print(json.dumps({"event": "worker_error", "error": str(exc)}), flush=True)
        sys.exit(2)
