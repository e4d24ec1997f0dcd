"""The CLI path of the benches: run ``trading ...`` as a user does (a subprocess, its own
fresh ``TRADING_HOME``), time its wall clock and read its ``--json`` answer.

Shared by bench/ingest.py and bench/scan.py. Target (issue 13): the command a user runs
takes at most ``3 x core + 5 s``, ``core`` being the same work timed in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRADING = Path(sys.executable).with_name("trading")
if not TRADING.exists():  # run by another interpreter: the project's own environment
    TRADING = ROOT / ".venv" / "bin" / "trading"

TARGET_FACTOR = 3.0
TARGET_FIXED_S = 5.0


def target_seconds(core_s: float) -> float:
    """The most the CLI may take for work the core does in ``core_s``."""
    return TARGET_FACTOR * core_s + TARGET_FIXED_S


def home_env(home: Path, warehouse: str = "lake") -> dict[str, str]:
    """This process's environment without any TRADING_/DAGSTER_ setting, pointed at ``home``
    (``warehouse="file"``: the DuckDB-file warehouse in it instead of the default DuckLake)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADING_", "DAGSTER_"))}
    env.update(TRADING_HOME=str(home), DBT_SEND_ANONYMOUS_USAGE_STATS="false", GX_ANALYTICS_ENABLED="false")
    if warehouse == "file":
        env["TRADING_WAREHOUSE"] = str(home / "warehouse.duckdb")
    return env


@dataclass
class CliRun:
    args: list[str]
    seconds: float  # wall clock of the subprocess, start-up included
    out: dict  # its --json answer


def run_cli(args: list[str], home: Path, warehouse: str = "lake", timeout: float = 6 * 3600) -> CliRun:
    """``trading <args> --json`` with ``home`` as TRADING_HOME, timed; exits loudly (with the
    command's own output) when it fails or does not answer JSON."""
    cmd = [str(TRADING), *args, "--json"]
    home.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # cwd: the home's folder, so no .env of the caller's working directory is read
    proc = subprocess.run(cmd, env=home_env(home, warehouse), cwd=home.parent, capture_output=True,
                          text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    try:
        out = json.loads(proc.stdout)
    except json.JSONDecodeError:
        out = None
    if proc.returncode != 0 or not isinstance(out, dict):
        sys.stderr.write(f"$ TRADING_HOME={home} {' '.join(cmd)}\n--- stdout\n{proc.stdout[-6000:]}\n"
                         f"--- stderr\n{proc.stderr[-6000:]}\n")
        raise SystemExit(f"`trading {' '.join(args)}` failed (exit {proc.returncode}) after {seconds:.1f}s")
    return CliRun(args, seconds, out)


def check_loaded(run: CliRun, expected: int) -> None:
    """The ingest answer says every bar was loaded, none rejected, every run succeeded."""
    out = run.out
    bad = [r["job"] for r in out.get("runs", []) if not r.get("success")]
    if out.get("loaded") != expected or out.get("rejected") or bad:
        sys.stderr.write(json.dumps(out, indent=2, default=str)[:6000] + "\n")
        raise SystemExit(f"`trading {' '.join(run.args)}`: loaded {out.get('loaded')!r} of {expected:,} bars, "
                         f"rejected {out.get('rejected')!r}, failed runs {bad}")


def run_seconds(run: CliRun) -> float:
    """Seconds the command's Dagster run(s) took inside the subprocess (as it reports them)."""
    if "runs" in run.out:
        return sum(r.get("seconds") or 0.0 for r in run.out["runs"])
    return float(run.out.get("seconds") or 0.0)


def step_seconds(home: Path, run_id: str, warehouse: str = "lake") -> dict[str, float]:
    """Wall seconds of each step of a finished run of ``home``, from its Dagster instance
    (e.g. ``dbt_models``: the dbt build inside a scan). Best effort: {} if unreadable."""
    try:
        from trading_pipeline import runs
        from trading_pipeline.settings import Settings

        settings = Settings(home=home, warehouse=home_env(home, warehouse).get("TRADING_WAREHOUSE", ""))
        inst = runs.instance(settings)
        return {s.step_key: round(s.end_time - s.start_time, 2)
                for s in inst.get_run_step_stats(run_id) if s.start_time and s.end_time}
    except Exception as exc:  # noqa: BLE001 - a figure for the notes, never a reason to fail
        sys.stderr.write(f"(step times of run {run_id} unreadable: {type(exc).__name__}: {exc})\n")
        return {}


def write_bar_files(bars, folder: Path, files: str = "10", fmt: str = "parquet") -> list[Path]:
    """Write synthetic bars as a user's export: a ``symbol`` column (or, with ``files="symbol"``
    and CSV, the symbol in the file name), a ``date`` column for daily bars and a UTC ``ts``
    for intraday ones, then OHLCV. ``files``: ``"symbol"`` (one file per symbol) or a number
    of files the symbols are split into."""
    import polars as pl

    folder.mkdir(parents=True, exist_ok=True)
    daily = bool((bars["timeframe"] == "1d").all())
    when = pl.col("ts").dt.date().alias("date") if daily else pl.col("ts").dt.replace_time_zone("UTC")
    df = bars.select("symbol", when, "open", "high", "low", "close", "volume")
    symbols = df["symbol"].unique(maintain_order=True).to_list()
    if files == "symbol":
        groups = [(s, [s]) for s in symbols]
    else:
        n, k = max(1, min(int(files), len(symbols))), len(symbols)
        groups = [(f"part-{i:04d}", symbols[i * k // n:(i + 1) * k // n]) for i in range(n)]
    paths = []
    for name, syms in groups:
        part = df.filter(pl.col("symbol").is_in(syms))
        path = folder / f"{name}.{fmt}"
        if fmt == "csv":
            if files == "symbol":  # AAPL.csv: the symbol is in the name
                part = part.drop("symbol")
            part.write_csv(path)
        else:
            part.write_parquet(path)
        paths.append(path)
    return paths
