"""The warm worker (`trading worker start`), as a user runs it: the `trading` entry point hands
commands to it and gets their output, exit code and signals through; each command keeps its own
environment, directory and stdin; a scan (a real Dagster run whose dbt build runs in a fork of the
worker too) gives what the same scan gives without it; a dead worker or a code change means the
command runs in its own process, as before."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from tests.api.support import free_port

pytestmark = [pytest.mark.timeout(900)]
BIN = Path(sys.executable).parent
TRADING = str(BIN / "trading")
PACKAGE = Path(__file__).resolve().parents[2] / "trading_pipeline"


def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TRADING_WORKER", "TRADING_WORKER_SOCKET")}
    return {**env, "TRADING_HOME": str(home), "COLUMNS": "120", **extra}


def run(home: Path, *args: str, timeout: float = 600, input: str | None = None, cwd: Path | None = None,
        **extra) -> subprocess.CompletedProcess:
    return subprocess.run([TRADING, *args], env=_env(home, **extra), capture_output=True, text=True,
                          timeout=timeout, input=input, cwd=cwd)


def served(home: Path) -> dict:
    out = run(home, "worker", "status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["served"]


@pytest.fixture
def worker_home(tmp_path):
    home = tmp_path / "home"
    out = run(home, "worker", "start", "--json", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    status = json.loads(out.stdout)
    assert status["served"] == {"trading": 0, "dbt": 0}
    yield home
    run(home, "worker", "stop", timeout=120)
    deadline = time.monotonic() + 30  # `stop` returns when the socket is gone; the exit follows
    while _alive(status["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(status["pid"]):  # a worker that outlived its test would serve the next one's stale code
        os.kill(status["pid"], signal.SIGKILL)
        raise AssertionError("the worker did not stop")


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped is not: the worker's parent, `worker start`, is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_without_a_worker_commands_run_here(tmp_path):
    home = tmp_path / "home"
    out = run(home, "worker", "status")
    assert out.returncode == 1 and "no worker runs for this home" in out.stdout
    out = run(home, "rules", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["valid"] is True


def test_commands_run_in_the_worker_with_their_own_terminal_stdin_and_exit_code(worker_home, tmp_path):
    home = worker_home
    again = run(home, "worker", "start")
    assert again.returncode == 2 and "already runs" in again.stderr

    local = run(home, "rules", "--json", TRADING_WORKER="off")
    there = run(home, "rules", "--json")
    assert there.returncode == 0 and there.stdout == local.stdout
    assert served(home)["trading"] == 1  # the off switch ran it here; the other went to the worker

    # the caller's terminal width (COLUMNS: not a setting) shapes the table as it would here
    narrow, wide = run(home, "rules", COLUMNS="70"), run(home, "rules", COLUMNS="200")
    assert narrow.stdout == run(home, "rules", COLUMNS="70", TRADING_WORKER="off").stdout
    assert max(map(len, narrow.stdout.splitlines())) <= 70 < max(map(len, wide.stdout.splitlines()))
    # an exit code other than 0: a Saturday is refused before any run
    out = run(home, "scan", "--date", "2013-01-19")
    assert out.returncode == 2 and "is not an XNYS session" in out.stderr
    assert served(home)["trading"] == 4

    # a load (a real Dagster run in the worker's child), then the caller's stdin
    bars = tmp_path / "TEST.csv"
    bars.write_text("date,open,high,low,close,volume\n2024-01-02,10,11,9,10.5,1000\n"
                    "2024-01-03,10.5,12,10,11.5,1200\n2024-01-04,11.5,12,11,11.8,900\n")
    out = run(home, "ingest", str(bars), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["loaded"] == 3, out.stdout + out.stderr
    out = run(home, "sql", input="SELECT sum(volume) AS v FROM raw.bars_daily;\n")
    assert out.returncode == 0 and "3,100" in out.stdout, out.stderr
    assert served(home)["trading"] == 6


def test_a_command_with_other_settings_runs_here(worker_home, tmp_path):
    """The worker read its settings (and built the Dagster definitions) once: a command whose
    settings come from elsewhere (another variable, another directory) is not its to run."""
    home = worker_home
    bad = tmp_path / "bad_rules.yaml"
    bad.write_text("scans:\n  - name: x\n    kind: nonsense\n")
    out = run(home, "rules", "--json", TRADING_RULES_FILE=str(bad))
    local = run(home, "rules", "--json", TRADING_RULES_FILE=str(bad), TRADING_WORKER="off")
    assert out.returncode == local.returncode == 2 and out.stdout == local.stdout
    assert "nonsense" in out.stdout + out.stderr and "not the worker's" in out.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "my_rules.yaml").write_text((PACKAGE.parent / "rules.yaml").read_text())
    out = run(home, "rules", "--json", cwd=elsewhere, TRADING_RULES_FILE="my_rules.yaml")
    local = run(home, "rules", "--json", cwd=elsewhere, TRADING_RULES_FILE="my_rules.yaml", TRADING_WORKER="off")
    assert out.returncode == local.returncode == 0, out.stderr  # found where the caller stands
    assert out.stdout == local.stdout and json.loads(out.stdout)["valid"] is True
    assert served(home)["trading"] == 0


def test_ctrl_c_reaches_the_command(worker_home):
    port = free_port()
    proc = subprocess.Popen([TRADING, "api", "--host", "127.0.0.1", "--port", str(port)], env=_env(worker_home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        else:
            raise AssertionError("the API never listened")
        assert served(worker_home)["trading"] >= 1  # the server runs in a fork of the worker
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    with socket.socket() as s:  # the forked server is gone with its caller's Ctrl-C
        assert s.connect_ex(("127.0.0.1", port)) != 0


def _history(folder: Path) -> str:
    """Three symbols over 2023, each breaking out on the last session: the scan's day."""
    from trading_pipeline.marketdata.calendars import session_dates

    days = session_dates("XNYS", date(2023, 1, 3), date(2023, 12, 29))
    folder.mkdir()
    for i, sym in enumerate(("AAA", "BBB", "CCC")):
        lines = ["date,open,high,low,close,volume"]
        for n, d in enumerate(days):
            c = 50 + 10 * i + 2 * math.sin(n / 5) + (8 if d == days[-1] else 0)
            volume = 100_000 * (3 if d == days[-1] else 1) + 1_000 * n
            lines.append(f"{d},{c - 0.3:.2f},{c + 0.5:.2f},{c - 0.6:.2f},{c:.2f},{volume}")
        (folder / f"{sym}.csv").write_text("\n".join(lines) + "\n")
    return str(days[-1])


def test_a_scan_in_the_worker_equals_one_without(worker_home, tmp_path):
    other = tmp_path / "other"
    day = _history(tmp_path / "bars")
    for home, extra in ((worker_home, {}), (other, {"TRADING_WORKER": "off"})):
        out = run(home, "ingest", str(tmp_path / "bars"), "--json", **extra)
        assert out.returncode == 0 and json.loads(out.stdout)["loaded"] == 3 * 250, out.stderr
    args = ("scan", "--date", day, "--json")
    there = run(worker_home, *args)
    here = run(other, *args, TRADING_WORKER="off")
    assert there.returncode == here.returncode == 0, there.stderr + here.stderr
    a, b = json.loads(there.stdout), json.loads(here.stdout)
    assert len(a["signals"]) >= 3 and a["signals"] == b["signals"]
    counts = served(worker_home)
    assert counts["trading"] == 2 and counts["dbt"] >= 1  # its dbt build ran in the worker too
    sql = "SELECT count(*) AS n FROM marts.indicators_daily"
    assert run(worker_home, "sql", sql, "--json").stdout == run(other, "sql", sql, "--json").stdout


def test_a_dead_worker_or_changed_code_means_running_here(worker_home):
    home = worker_home
    # changed code: the worker refuses, says so, exits; the command still runs (here)
    target = PACKAGE / "cli" / "worker_cmd.py"
    before = target.stat()
    try:
        os.utime(target, (before.st_atime, time.time() + 5))
        out = run(home, "rules", "--json")
    finally:
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert out.returncode == 0 and json.loads(out.stdout)["valid"] is True
    assert "worker started before the code changed" in out.stderr
    deadline = time.monotonic() + 30
    while (home / "worker.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (home / "worker.sock").exists()

    # a killed worker leaves its socket file: nobody answers, the command runs here
    out = run(home, "worker", "start", "--json", timeout=180)
    pid = json.loads(out.stdout)["pid"]
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert (home / "worker.sock").exists()
    out = run(home, "rules", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["valid"] is True and out.stderr == ""
    assert run(home, "worker", "status").returncode == 1
