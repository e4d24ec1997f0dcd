"""`trading worker start|stop|status`: the warm worker that runs `trading` commands without
paying the import floor each time (trading_pipeline/cli/worker.py says how and why)."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Annotated

import typer

from trading_pipeline.cli.output import JsonOpt, console, fail, print_json
from trading_pipeline.settings import get_settings

worker_app = typer.Typer(
    help="A warm worker for this TRADING_HOME: Dagster, dbt, great-expectations, DuckDB and polars "
    "imported and the Dagster definitions built once; each `trading` command started with the same "
    "settings (TRADING_* variables, directory, .env) runs in a fork of it, its dbt builds too. "
    "Optional: without it every command runs in its own process, as before.",
    no_args_is_help=True,
)


def _log_tail(path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@worker_app.command("start")
def start_cmd(
    foreground: Annotated[bool, typer.Option("--foreground", help="Run here until Ctrl-C instead of in the background.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the worker to be ready.")] = 90.0,
    json_out: JsonOpt = False,
) -> None:
    """Start the worker (exit 2 if one already runs for this home). Restart it after upgrading
    packages; after a code change it refuses work and exits by itself."""
    from trading_pipeline.cli.worker import ask, socket_path

    settings = get_settings()
    settings.ensure_dirs()
    path = socket_path(settings.home)
    if len(str(path).encode()) > 100:
        fail(f"the worker's socket path is too long for a Unix socket: {path}",
             "use a shorter TRADING_HOME", code=2)
    running = ask(path, "status")
    if running:
        fail(f"a worker already runs for this home (pid {running['pid']})", "`trading worker stop` first", code=2)
    serve = [sys.executable, "-m", "trading_pipeline.cli.entry", str(path)]
    if foreground:  # its JSON lines on this terminal until Ctrl-C
        raise typer.Exit(subprocess.run(serve, check=False).returncode)
    log = settings.home / "worker.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(serve,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    status = None
    with console.status("starting the worker (importing Dagster, dbt, great-expectations...)", spinner="dots"):
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                fail(f"the worker exited with code {proc.returncode} before it was ready", f"its log ({log}):\n"
                     + _log_tail(log), code=2)
            status = ask(path, "status")
            if status:
                break
            time.sleep(0.2)
    if not status:
        proc.terminate()
        fail(f"the worker was not ready within {timeout:.0f} s", f"its log: {log}", code=2)
    if json_out:
        print_json({**status, "log": str(log)})
    else:
        console.print(f"worker ready: pid {status['pid']}, packages imported in {status['preload_s']} s; "
                      f"`trading` commands for {settings.home} now run in it (log: {log})")


@worker_app.command("stop")
def stop_cmd(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for running commands to finish.")] = 600.0,
    json_out: JsonOpt = False,
) -> None:
    """Stop the worker: it takes no new command, lets running ones finish, then exits."""
    from trading_pipeline.cli.worker import ask, socket_path

    path = socket_path(get_settings().home)
    answer = ask(path, "stop")
    if answer is None:
        if json_out:
            print_json({"stopped": False, "reason": "no worker runs for this home"})
        else:
            console.print("no worker runs for this home")
        return
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if path.exists():
        fail(f"the worker (pid {answer['pid']}) still runs {answer['running']} command(s) after {timeout:.0f} s",
             "wait for them, or `kill` the worker's pid", code=1)
    if json_out:
        print_json({"stopped": True, "pid": answer["pid"], "served": answer["served"]})
    else:
        console.print(f"worker {answer['pid']} stopped (served {answer['served']['trading']} commands, "
                      f"{answer['served']['dbt']} dbt builds)")


@worker_app.command("status")
def status_cmd(json_out: JsonOpt = False) -> None:
    """Whether a worker runs for this home, and what it has served (exit 1 if none)."""
    from trading_pipeline.cli.worker import ask, socket_path

    path = socket_path(get_settings().home)
    status = ask(path, "status")
    if json_out:
        print_json(status or {"running": False, "socket": str(path)})
    elif status:
        console.print(f"worker pid {status['pid']} up {status['uptime_s']} s: {status['served']['trading']} "
                      f"commands, {status['served']['dbt']} dbt builds served, {status['running']} running")
    else:
        console.print(f"no worker runs for this home ({path}): `trading worker start`")
    if not status:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(worker_app, name="worker")
