"""TRADING_LOG_FORMAT=json: API and Dagster log lines are JSON, with request_id / run_id fields."""

from __future__ import annotations

import json
import logging
from datetime import date
from typing import TYPE_CHECKING

from trading_pipeline.logs import FIELDS_ATTR, JsonFormatter, event_text, formatter, get_logger

if TYPE_CHECKING:
    import dagster as dg


def record(msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord("trading", logging.INFO, __file__, 1, msg, args, None)


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _logged(emit) -> logging.LogRecord:
    """The one record ``emit(log)`` writes through a structlog logger of ours."""
    keep, std = _Keep(), logging.getLogger("trading.test_json_logs")
    std.addHandler(keep)
    std.setLevel(logging.INFO)
    try:
        emit(get_logger(std.name))
    finally:
        std.removeHandler(keep)
    [rec] = keep.records
    return rec


def test_event_fields_become_json_keys():
    rec = _logged(lambda log: log.info("request", request_id="abc", status=200, path="/signals x"))
    out = json.loads(JsonFormatter().format(rec))
    assert out["event"] == "request" and out["request_id"] == "abc" and out["status"] == 200
    assert out["path"] == "/signals x" and out["level"] == "INFO" and "ts" in out
    assert out["msg"] == 'event=request request_id=abc status=200 path="/signals x"'
    # the same event as text, and the record's own message for handlers that are not ours
    assert rec.getMessage() == out["msg"]
    text = formatter("text").format(rec)
    assert text.startswith("ts=") and text.endswith(' level=INFO logger=trading.test_json_logs ' + out["msg"])


def test_other_records_and_tracebacks():
    """A third-party stdlib record (uvicorn) goes through the same formatter: its message in
    ``msg``, no fields lifted from its text; an exception's traceback is ``exc`` in JSON."""
    out = json.loads(formatter("json").format(record("event=spoofed status=%s", "x")))
    assert out["msg"] == "event=spoofed status=x" and "event" not in out and "status" not in out

    def boom(log):
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("unhandled_error", path="/x")

    rec = _logged(boom)
    out = json.loads(formatter("json").format(rec))
    assert out["event"] == "unhandled_error" and out["level"] == "ERROR" and "ValueError: boom" in out["exc"]
    text = formatter("text").format(rec)
    assert text.splitlines()[0].endswith("event=unhandled_error path=/x") and text.endswith("ValueError: boom")


def test_unknown_format_is_refused():
    try:
        formatter("xml")
    except ValueError as exc:
        assert "TRADING_LOG_FORMAT" in str(exc)
    else:
        raise AssertionError("xml accepted")


def test_api_request_lines_are_json_with_request_id(tmp_path, monkeypatch, capsys):
    from fastapi.testclient import TestClient

    from trading_api.cli import configure_logging
    from trading_api.main import create_app
    from trading_pipeline.settings import get_settings

    monkeypatch.setenv("TRADING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADING_LOG_FORMAT", "json")
    get_settings.cache_clear()
    try:
        configure_logging("info")
        with TestClient(create_app(get_settings())) as client:
            r = client.get("/health", headers={"X-Request-ID": "req-42"})
        assert r.headers["X-Request-ID"] == "req-42"
        lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
        assert any(x.get("request_id") == "req-42" for x in lines), lines[-5:]
    finally:
        logging.getLogger().handlers[:] = []
        get_settings.cache_clear()


def test_dagster_run_lines_are_json_with_run_id(tmp_path, monkeypatch, capfd):
    from trading_pipeline import runs
    from trading_pipeline.settings import get_settings

    monkeypatch.setenv("TRADING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADING_LOG_FORMAT", "json")
    get_settings.cache_clear()
    runs.definitions.cache_clear()
    try:
        f = tmp_path / "GOOG.csv"
        f.write_text("Date,Open,High,Low,Close,Volume\n2013-03-01,797.8,807.1,796.2,806.2,2175400\n")
        r = runs.run_job("ingest_daily_bars", get_settings(), quiet=False, start=date(2013, 3, 1),
                         run_config={"ops": {"raw__bars_daily": {"config": {"source": "files", "path": str(f)}}}})
        assert r.success
        captured = capfd.readouterr()
        lines = [json.loads(x) for x in (captured.out + captured.err).splitlines() if x.startswith("{")]
        ours = [x for x in lines if "bars_loaded" in json.dumps(x)]
        assert ours and r.run_id in json.dumps(ours[0])
    finally:
        get_settings.cache_clear()
        runs.definitions.cache_clear()


# ---- every run of the code location follows TRADING_LOG_FORMAT (defs/run_logs.py) -----------

def dagster_record(orig: str, error: str = "", fields: dict | None = None) -> logging.LogRecord:
    """A record as Dagster hands it to a run's loggers: prefixed message plus ``dagster_meta``
    (and, for an event logged with ``logs.run_event``, its fields)."""
    rec = record(f"scan_daily - rid-1 - 123 - raw__bars_daily - STEP_FAILURE - {orig}{error}")
    rec.dagster_meta = {"run_id": "rid-1", "job_name": "scan_daily", "step_key": "raw__bars_daily",
                        "orig_message": orig, "dagster_event": None}
    if fields is not None:
        setattr(rec, FIELDS_ATTR, fields)
    return rec


def event_record(event: str, error: str = "", **fields) -> logging.LogRecord:
    return dagster_record(event_text(event, **fields), error, {"event": event, **fields})


def test_dagster_records_carry_the_run_context_in_both_formats():
    rec = event_record("bars_loaded", error="\n\nValueError: boom", loaded=12, run_id="not-the-run")
    out = json.loads(formatter("json").format(rec))
    # the run's own context wins over a same-named field of the event
    assert out["run_id"] == "rid-1" and out["job_name"] == "scan_daily" and out["step_key"] == "raw__bars_daily"
    assert out["event"] == "bars_loaded" and out["loaded"] == 12
    assert out["msg"] == "event=bars_loaded loaded=12 run_id=not-the-run" and out["error"] == "ValueError: boom"
    text = formatter("text").format(event_record("bars_loaded", loaded=12))
    assert text.startswith("ts=") and " level=INFO logger=trading " in text
    assert text.endswith("run_id=rid-1 step_key=raw__bars_daily job_name=scan_daily event=bars_loaded loaded=12")


def _resolve(req: dg.RunRequest, job: dg.JobDefinition) -> dg.RunRequest:
    """What the daemon does with a run request before it creates the run: a request without
    run config runs with the job's default config (a partitioned job's, that partition's)."""
    if req.partition_key is None:
        return req if req.run_config else req.with_replaced_attrs(run_config=job.run_config or {})
    return req.with_resolved_tags_and_config(
        target_definition=job, dynamic_partitions_requests=[], dynamic_partitions_store=None
    )


def _logger_keys(job: dg.JobDefinition, run_config: dict) -> set[str]:
    import dagster as dg

    return set(dg.validate_run_config(job, run_config).get("loggers") or {})


def test_every_job_schedule_and_sensor_names_the_run_logger(trading_home, monkeypatch):
    """Dagster instantiates a job's loggers only when the run config names them; check that the
    run config each launch path produces (no run config, each schedule's and sensor's run
    requests) names ``console``, and that ``console`` is our logger on every job."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    import dagster as dg

    from trading_pipeline.definitions import defs
    from trading_pipeline.defs.run_logs import run_logger

    repo = defs().get_repository_def()
    # __ASSET_JOB (UI "Materialize") has no default config; backtest and load_corporate_actions
    # require op config (the CLI launches them, through runs.run_job; the launchpad asks for it)
    unchecked = {"__ASSET_JOB", "backtest", "load_corporate_actions"}
    jobs = {job.name: job for job in repo.get_all_jobs()}
    for job in jobs.values():
        assert job.loggers["console"] is run_logger, job.name
        if job.name in unchecked:
            continue
        req = dg.RunRequest(partition_key="2013-03-01" if job.partitions_def else None)
        assert _logger_keys(job, _resolve(req, job).run_config) == {"console"}, job.name

    ny = ZoneInfo("America/New_York")
    ticks = {"eod_scan": datetime(2013, 3, 1, 16, 15, tzinfo=ny),
             "intraday_scan": datetime(2013, 3, 1, 10, 5, tzinfo=ny),
             "freshness_daily": datetime(2013, 3, 1, 18, 0, tzinfo=ny),
             "lake_maintenance_daily": datetime(2013, 3, 1, 3, 30, tzinfo=ny),
             "rebalance_after_close": datetime(2013, 3, 1, 16, 45, tzinfo=ny),
             "backup_nightly": datetime(2013, 3, 1, 2, 15, tzinfo=ny)}
    requests = []
    from trading_pipeline import runs
    from trading_pipeline.settings import get_settings

    targets = trading_home.parent / "targets.csv"  # the rebalance schedule skips without targets
    targets.write_text("symbol,weight\nGOOG,0.5\n")
    monkeypatch.setenv("TRADING_REBALANCE_TARGETS", str(targets))
    get_settings.cache_clear()
    inst = runs.instance(get_settings())  # the intraday ticks look for an unfinished run first
    for schedule in repo.schedule_defs:
        data = schedule.evaluate_tick(dg.build_schedule_context(
            scheduled_execution_time=ticks[schedule.name], repository_def=repo, instance=inst))
        assert data.run_requests, schedule.name
        requests += [(schedule.job_name, r) for r in data.run_requests]
    replay = repo.get_sensor_def("sample_replay")
    requests += [(replay.job_name, r) for r in replay.evaluate_tick(dg.build_sensor_context(repository_def=repo, instance=inst)).run_requests]
    assert {name for name, _ in requests} == {"scan_daily", "scan_intraday", "freshness_checks", "lake_maintenance",
                                              "rebalance", "backup"}
    for name, req in requests:
        rc = _resolve(req, jobs[name]).run_config
        assert _logger_keys(jobs[name], rc) == {"console"}, (name, rc)
    # the intraday requests keep their op config beside the logger
    assert all("ops" in r.run_config for name, r in requests if name == "scan_intraday")


def test_daemon_style_runs_follow_trading_log_format(trading_home, monkeypatch, capfd):
    """A run launched like a schedule launches it (a run request with no run config, resolved
    against the job from the Definitions) logs JSON lines with run_id under
    TRADING_LOG_FORMAT=json and key=value text otherwise, read when the run starts."""
    import dagster as dg

    from trading_pipeline.definitions import defs
    from trading_pipeline.defs.scans import session_tags

    job = defs().get_repository_def().get_job("ingest_daily_bars")
    # as the schedules and sensors ask for one session (defs/scans.py): op config, no loggers
    req = _resolve(dg.RunRequest(run_config={"ops": {"raw__bars_daily": {"config": {"start": "2013-03-01"}}}},
                                 tags=session_tags("2013-03-01")), job)
    assert "loggers" not in req.run_config

    def launch(log_format: str) -> tuple[str, list[str]]:
        monkeypatch.setenv("TRADING_LOG_FORMAT", log_format)
        capfd.readouterr()
        result = job.execute_in_process(run_config=req.run_config, tags=req.tags, raise_on_error=False)
        assert result.success
        captured = capfd.readouterr()
        return result.run_id, (captured.out + captured.err).splitlines()

    run_id, lines = launch("text")
    ours = [x for x in lines if "event=bars_loaded" in x]
    assert ours and ours[0].startswith("ts=") and f"run_id={run_id}" in ours[0], lines[-10:]
    assert "job_name=ingest_daily_bars" in ours[0] and "step_key=" in ours[0]
    assert not any(x.startswith("{") and run_id in x for x in lines)

    run_id, lines = launch("json")  # same Definitions: the format is read per run
    parsed = [json.loads(x) for x in lines if x.startswith("{")]
    ours = [x for x in parsed if x.get("event") == "bars_loaded"]
    assert ours, lines[-10:]
    assert ours[0]["run_id"] == run_id and ours[0]["job_name"] == "ingest_daily_bars"
    assert ours[0]["step_key"] and int(ours[0]["loaded"]) > 0 and ours[0]["level"] == "INFO"
    # with no level in the run config, Dagster's lifecycle events are there too (DEBUG)
    assert {"RUN_START", "STEP_START", "RUN_SUCCESS"} <= {x.get("dagster_event") for x in parsed}
    # every line the run logged is JSON with its run_id (no colored default logger beside it)
    assert not [x for x in lines if run_id in x and not x.startswith("{")]
    assert all(x["run_id"] == run_id for x in parsed if "job_name" in x)


def test_text_run_lines_are_one_line_with_the_error_but_no_stack_trace():
    """Issue 20.7: a failed or interrupted run (Ctrl-C on `make up`) printed a stack trace in
    the middle of the log; an event is one line, the trace stays in the run's event log."""
    error = ("\n\ndagster._core.errors.DagsterAssetCheckFailedError: 1 blocking asset check failed:\n"
             "raw/bars_daily: high_low_consistent\n\nStack Trace:\n  File \"x.py\", line 1, in f\n    raise X\n")
    text = formatter("text").format(dagster_record("Execution of step failed.", error=error))
    assert "\n" not in text and "Stack Trace" not in text and "x.py" not in text
    assert text.endswith('error="DagsterAssetCheckFailedError: 1 blocking asset check failed: '
                         'raw/bars_daily: high_low_consistent"'), text
