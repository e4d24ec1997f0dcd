"""`make up` for real: scripts/up.sh starts `dagster dev` (webserver + daemon) and the API.

The Dagster UI's GraphQL must show the code location with its jobs, schedules, sensors
and asset checks, and the runs the CLI started in the same TRADING_HOME; then SIGINT stops
everything within seconds (FACTS: dagster dev must not inherit ignored signals).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from trading_pipeline.cli.main import app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]
GOOD = "Date,Open,High,Low,Close,Volume\n2013-02-28,801.1,806.2,799.0,801.2,2265800\n2013-03-01,797.8,807.1,796.2,806.2,2175400\n"

QUERY = """{
  repositoriesOrError { ... on RepositoryConnection { nodes { name
    jobs { name }
    schedules { name scheduleState { status } }
    sensors { name sensorState { status } }
    assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks { checks { name } } } }
  } } }
  runsOrError { ... on Runs { results { runId jobName status } } }
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_processes_of(home: Path) -> None:
    """SIGKILL whatever of this home still runs (dagster dev runs in a session of its own, so a
    test that failed before stopping it must not leave it launching runs for the rest of the suite)."""
    for entry in _processes_of(home):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(entry.split()[0]), signal.SIGKILL)


def _processes_of(home: Path) -> list[str]:
    """Live processes started with TRADING_HOME=home outside this test's session (read from
    /proc), as 'pid cmdline'."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if f"TRADING_HOME={home}".encode() not in (d / "environ").read_bytes().split(b"\0"):
                continue
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if stat[0] == "Z" or int(stat[3]) == os.getsid(0):
                continue  # a zombie (already exited), or this test's own helper (same session)
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{d.name} {cmdline[:160]}")
        except OSError:
            continue
    return found


def test_make_up_serves_dagster_ui_and_api(trading_home, tmp_path):
    f = tmp_path / "GOOG.csv"
    f.write_text(GOOD)
    res = CliRunner().invoke(app, ["ingest", str(f)])
    assert res.exit_code == 0, res.output
    dport, aport = free_port(), free_port()
    env = {**os.environ, "TRADING_HOME": str(trading_home), "DAGSTER_PORT": str(dport),
           "TRADING_API_PORT": str(aport)}
    log = open(tmp_path / "up.log", "w")
    # as from a terminal: SIGINT at its default (a suite started in the background of a
    # non-interactive shell inherits it ignored, and bash cannot trap a signal ignored at entry)
    proc = subprocess.Popen(["bash", "scripts/up.sh"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    reached_the_end = False
    try:
        deadline = time.monotonic() + 180
        data = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            try:
                r = httpx.post(f"http://127.0.0.1:{dport}/graphql", json={"query": QUERY}, timeout=10)
                data = r.json()["data"]
                if data["repositoriesOrError"].get("nodes"):
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(1)
        assert data and data["repositoriesOrError"]["nodes"], (tmp_path / "up.log").read_text()[-3000:]
        repo = data["repositoriesOrError"]["nodes"][0]
        jobs = {j["name"] for j in repo["jobs"]}
        assert {"scan_daily", "scan_intraday", "trade_signals", "ingest_daily_bars", "backtest"} <= jobs
        schedules = {s["name"]: s["scheduleState"]["status"] for s in repo["schedules"]}
        assert schedules["eod_scan"] == "RUNNING" and schedules["intraday_scan"] == "RUNNING"
        sensors = {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}
        assert sensors["signals_to_orders"] == "RUNNING" and sensors["sample_replay"] == "RUNNING"
        checks = {"/".join(n["assetKey"]["path"]): [c["name"] for c in n["assetChecksOrError"].get("checks", [])]
                  for n in repo["assetNodes"]}
        assert "unique_keys" in checks["raw/bars_daily"] and "reconciliation" in checks["ops/orders"]
        assert any(checks.get("marts/signals", []))  # dbt tests as asset checks
        runs = data["runsOrError"]["results"]
        assert any(r["jobName"] == "ingest_daily_bars" and r["status"] == "SUCCESS" for r in runs)
        # the API runs beside it
        assert httpx.get(f"http://127.0.0.1:{aport}/health", timeout=10).status_code in (200, 503)
        # Stop while a run the daemon launched (the sample_replay sensor's, every 30 s) is starting:
        # Ctrl-C used to reach the run's worker as it started, and the daemon printed a
        # DagsterLaunchFailedError traceback (issue 20.7).
        starting = '{ runsOrError(filter: {statuses: [STARTING]}) { ... on Runs { results { runId } } } }'
        deadline, seen = time.monotonic() + 120, []
        while not seen and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            try:
                r = httpx.post(f"http://127.0.0.1:{dport}/graphql", json={"query": starting}, timeout=5)
                seen = r.json()["data"]["runsOrError"]["results"]
            except (httpx.HTTPError, KeyError, ValueError, TypeError):
                pass
            time.sleep(0.1)
        assert seen, "no run was launched within 120 s"
        reached_the_end = True
    finally:
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            _kill_processes_of(trading_home)
            pytest.fail("make up did not stop within 60 s of SIGINT")
        finally:
            log.close()
            if not reached_the_end:  # a failed assertion above: leave nothing of it running
                _kill_processes_of(trading_home)
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 0, proc.returncode
    # nothing of it is left running (code server, run workers): every process of this home is gone
    # (a code server left behind would live on until its 45 s heartbeat timeout)
    deadline = time.monotonic() + 15
    while _processes_of(trading_home) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_of(trading_home) == [], _processes_of(trading_home)
    # a clean start and stop (issue 20.7): no traceback, no deprecation notice
    out = (tmp_path / "up.log").read_text()
    assert "Traceback" not in out and "Stack Trace" not in out and "DagsterLaunchFailedError" not in out, out[-3000:]
    noise = [ln for ln in out.splitlines() if any(w in ln for w in ("deprecat", "superseded", "SupersessionWarning",
                                                                     "Found a dagster instance configuration"))]
    assert noise == [], noise
