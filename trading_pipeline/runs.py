"""Launch Dagster jobs in-process against the instance under TRADING_HOME.

The CLI goes through here so that every load or scan it starts is a real Dagster run,
recorded where `dagster dev` (``make up``) shows it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from functools import lru_cache

import dagster as dg

from trading_pipeline.defs.run_logs import with_run_logging
from trading_pipeline.settings import Settings

PID_TAG, HOST_TAG = "trading/pid", "trading/host"  # as run_state.py reads them (it imports this module)
# what a quiet run printed (dbt's log, compute-log tee), by run id, for failure messages
CAPTURED: dict[str, str] = {}


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[io.StringIO]:
    """Keep dbt's streamed log and Dagster's compute-log tee off our stdout (``--json``).

    Python-level writes are captured (and kept for the failure message); fd 1 is pointed
    at /dev/null for child processes. The full logs stay in the run's compute logs.
    """
    buf = io.StringIO()
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real fd 1 (embedded); capture at the Python level only
        with contextlib.redirect_stdout(buf):
            yield buf
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        with contextlib.redirect_stdout(buf):
            yield buf
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def prepare_dagster_home(settings: Settings) -> str:
    """Make DAGSTER_HOME and put the instance config there: ``TRADING_DAGSTER_YAML``
    (``settings.dagster_yaml``, the project's embedded-SQLite ``dagster.yaml`` by default),
    the same file the container entrypoint installs, so the CLI never swaps it back."""
    settings.ensure_dirs()
    home = settings.dagster_home
    src, dst = settings.dagster_yaml, home / "dagster.yaml"
    if not src.exists():
        if "dagster_yaml" in settings.model_fields_set:
            raise FileNotFoundError(f"no Dagster instance config at {src} (TRADING_DAGSTER_YAML)")
    elif not dst.exists() or dst.read_text() != src.read_text():
        tmp = home / f".dagster.yaml.{os.getpid()}"  # never let another process read half a file
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    return str(home)


def instance(settings: Settings) -> dg.DagsterInstance:
    """The Dagster instance of this home, opened from its folder (the process environment's
    DAGSTER_HOME is neither read nor written: `make up` exports its own)."""
    return dg.DagsterInstance.from_config(prepare_dagster_home(settings))


@lru_cache(maxsize=1)
def definitions() -> dg.Definitions:
    from trading_pipeline.definitions import defs

    return defs()


def session_key(d: date) -> str:
    """The session holding date ``d`` (weekends fall in Friday's), as runs are tagged."""
    from trading_pipeline.marketdata.calendars import session_of

    return session_of(d).isoformat()


def with_window(job: dg.JobDefinition, run_config: dict | None, start: date, end: date | None) -> dict:
    """``run_config`` with sessions ``start``..``end`` set on each bar asset of ``job``
    (BarsConfig.start/end, defs/bars.py) that does not name its own."""
    from trading_pipeline.defs.bars import DAILY, INTRADAY

    config = {**(run_config or {})}
    ops = {**config.get("ops", {})}
    selected = job.asset_layer.selected_asset_keys
    for key in (DAILY, INTRADAY):
        if key in selected:
            op = BAR_ASSETS[key]
            cfg = {**(ops.get(op, {}).get("config") or {})}
            cfg.setdefault("start", start.isoformat())
            cfg.setdefault("end", (end or start).isoformat())
            ops[op] = {**ops.get(op, {}), "config": cfg}
    config["ops"] = ops
    return config


def run_job(
    name: str,
    settings: Settings,
    *,
    run_config: dict | None = None,
    start: date | None = None,
    end: date | None = None,
    tags: dict[str, str] | None = None,
    quiet: bool = True,
    on_step: Callable[[int, int, str], None] | None = None,
) -> dg.ExecuteInProcessResult:
    """Run ``name`` in this process; ``on_step(done, total, step)`` is told as steps finish
    (read from the run's event log every half second), for a progress bar on long runs.

    ``start``/``end`` (inclusive) are the sessions its bar assets load, whatever the length:
    one run, one materialization, one result per check."""
    job = definitions().resolve_job_def(name)
    inst = instance(settings)
    reap_dead_runs(inst, settings)
    all_tags = {**(tags or {}), PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    if start is not None:
        from trading_pipeline.defs.bars import END_TAG, SESSION_TAG, START_TAG

        run_config = with_window(job, run_config, start, end)
        all_tags[START_TAG], all_tags[END_TAG] = session_key(start), session_key(end or start)
        if all_tags[START_TAG] == all_tags[END_TAG]:
            all_tags[SESSION_TAG] = all_tags[START_TAG]
    # the location's console logger (text or JSON per TRADING_LOG_FORMAT, defs/run_logs.py)
    # at the CLI's level: a run config of our own replaces the job's default one
    # (quiet: CRITICAL, so a failed step's stack trace stays in the run's log and the command
    # says what failed in its own words)
    config = with_run_logging(run_config, log_level="CRITICAL" if quiet else "INFO")
    run_id = str(uuid.uuid4())
    run = lambda: job.execute_in_process(  # noqa: E731
        run_config=config,
        instance=inst,
        tags=all_tags,
        raise_on_error=False,
        run_id=run_id,
    )
    with _step_progress(inst, run_id, len(job.graph.nodes), on_step):
        if not quiet:
            result = run()
        else:
            with _quiet_stdout() as buf:
                result = run()
        if not result.success:
            CAPTURED[result.run_id] = buf.getvalue()
    if result.success:
        _after_success(result, settings, run_config)
    return result


@contextlib.contextmanager
def _step_progress(inst: dg.DagsterInstance, run_id: str, total: int,
                   on_step: Callable[[int, int, str], None] | None) -> Iterator[None]:
    """While the block runs, report finished steps of ``run_id`` to ``on_step``."""
    if on_step is None:
        yield
        return
    stop = threading.Event()
    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS,
             dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_SKIPPED}

    def watch() -> None:
        seen = (-1, "")
        while not stop.wait(0.5):
            try:
                events = inst.all_logs(run_id, of_type=kinds)
            except Exception:  # the run's log may not exist yet
                continue
            done = sum(1 for e in events if e.dagster_event and e.dagster_event.event_type != dg.DagsterEventType.STEP_START)
            running = [e.step_key for e in events if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_START]
            now = (done, running[-1] if running else "")
            if now != seen:
                seen = now
                on_step(done, total, now[1])

    thread = threading.Thread(target=watch, name="run-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)


SERVING = dg.AssetKey(["serving", "snapshot"])
BAR_ASSETS = {dg.AssetKey(["raw", "bars_daily"]): "raw__bars_daily",
              dg.AssetKey(["raw", "bars_intraday"]): "raw__bars_intraday"}


def _after_success(result: dg.ExecuteInProcessResult, settings: Settings, run_config: dict | None) -> None:
    """Record the home's source at its first load (sources/registry.py), and publish the
    serving snapshot after a run that changed the warehouse without publishing it (a load,
    an orders run): the CLI's readers read only the snapshot, never the warehouse."""
    from trading_pipeline.marketdata.sources.registry import record_source

    materialized: set[dg.AssetKey] = set()
    for ev in result.get_asset_materialization_events():
        materialized.add(ev.asset_key)
        op = BAR_ASSETS.get(ev.asset_key)
        md = ev.event_specific_data.materialization.metadata
        if op and "rows_loaded" in md and md["rows_loaded"].value > 0:
            cfg = ((run_config or {}).get("ops", {}).get(op) or {}).get("config") or {}
            record_source(settings, cfg.get("source") or settings.data_source)
    if materialized and SERVING not in materialized:
        publish = run_job("publish_serving", settings)
        if not publish.success:  # the load itself succeeded; readers see the previous snapshot
            sys.stderr.write(f"warning: publishing the serving snapshot failed: {failure_message(publish)}\n")


def _committed_by(settings: Settings | None, run_id: str) -> str:
    """What a dead run's load committed, from the warehouse's own record (raw.bar_loads,
    written in the load's transaction after the bar suite passed on its bars)."""
    if settings is None:
        return ""
    from trading_pipeline.marketdata import warehouse
    try:
        con = warehouse.connect(settings.warehouse_path, read_only=True)
    except Exception:  # no warehouse yet, or a writer holds it: say nothing rather than guess
        return ""
    try:
        rows = con.sql("SELECT symbol, bars FROM raw.bar_loads WHERE run_id = ? ORDER BY symbol",
                       params=[run_id]).fetchall()
    except Exception:  # no load has recorded anything in this warehouse yet
        rows = []
    finally:
        con.close()
    if not rows:
        return "; nothing from its load was committed"
    shown = ", ".join(s for s, _ in rows[:10]) + (f" and {len(rows) - 10:,} more" if len(rows) > 10 else "")
    return (f"; its load had committed {sum(n for _, n in rows):,} bar(s) ({shown}), checked before the "
            "commit (raw.bar_loads); run the load again to record its check results")


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (run_state.py has the same check: it
    imports this module, so it cannot be imported from there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_runs(inst: dg.DagsterInstance, settings: Settings | None = None) -> list[str]:
    """Fail runs this host started in-process whose process is gone (``kill -9``, OOM).

    Such a run stays STARTED forever and keeps its ``duckdb_writer`` pool slot, so every
    later run would wait for it. A load commits in one transaction, after the bar suite
    passed on its bars: killed before the commit, nothing of it is stored; killed after,
    its bars are stored and checked, and raw.bar_loads says which. The failure message
    says which of the two happened (with ``settings``, from the warehouse).
    """
    reaped = []
    runs = inst.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING,
                                        dg.DagsterRunStatus.NOT_STARTED],  # died before it started
                              tags={HOST_TAG: socket.gethostname()})
    )
    for run in runs:
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        if pid and pid != os.getpid() and not alive(pid):
            inst.report_run_failed(run, f"process {pid} ended before the run did (killed?); marked failed"
                                   + _committed_by(settings, run.run_id))
            inst.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            reaped.append(run.run_id)
    return reaped


def _error_text(err) -> str:
    """An error's own message: Dagster keeps Python's ``module.Class: message`` line."""
    message = err.message.strip()
    return re.sub(rf"^(?:[\w.]+\.)?{re.escape(err.cls_name or '')}: ", "", message) if err.cls_name else message


# the warehouse could not be opened (its location, catalog or extensions): a setting to fix,
# not a failed computation (the CLI exits 2 with the message)
WAREHOUSE_ERRORS = ("WarehouseLocationError", "ExtensionMissing")


def warehouse_error(result: dg.ExecuteInProcessResult) -> str | None:
    """The message when the run's first step failure is that the warehouse could not be
    opened (:data:`WAREHOUSE_ERRORS`), else None."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            err = event.step_failure_data.error
            while err is not None:
                if err.cls_name in WAREHOUSE_ERRORS:
                    return _error_text(err)
                err = err.cause
            return None
    return None


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The first step failure's message (the user-facing error), or a generic line."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            err = event.step_failure_data.error
            while err.cause is not None and "dagster" in (err.cls_name or "").lower():
                err = err.cause
            cause = err
            # unwrap to the innermost user error
            while cause.cause is not None:
                cause = cause.cause
            message = f"{cause.cls_name}: {_error_text(cause)}"
            errors = [line.strip() for line in CAPTURED.get(result.run_id, "").splitlines()
                      if "error" in line.lower() and "0 error" not in line.lower()]
            if errors:
                message += "\n" + "\n".join(errors[-8:])
            return message
    return f"run {result.run_id} did not succeed"


def failed_checks(result: dg.ExecuteInProcessResult) -> list[str]:
    """``asset:check`` of every check that failed in the run, once each."""
    out: dict[str, None] = {}
    for ev in result.get_asset_check_evaluations():
        if not ev.passed:
            out[f"{ev.asset_key.to_user_string()}:{ev.check_name}"] = None
    return list(out)
