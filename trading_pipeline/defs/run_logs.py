"""One console logger for every run of this code location, following TRADING_LOG_FORMAT.

``run_logger`` reads the settings when a run starts (not when the code location loads) and
writes each Dagster log line to stderr as key=value text or, with ``TRADING_LOG_FORMAT=json``,
as one JSON object with ``run_id``, ``job_name``, ``step_key``, ``dagster_event`` and the
fields of the event an op logged with ``logs.run_event`` (``trading_pipeline.logs``).

``Definitions(loggers={"console": run_logger})`` alone is not enough: Dagster instantiates a
job's loggers only when the run config names them (``loggers: {console: {}}``) and otherwise
falls back to its own colored console logger (``create_log_manager`` in
``dagster._core.execution.context_creation_job``). So the run config of every run names it:

* every job of this location has :func:`run_logging` as its default config (runs launched
  with no run config: the UI launchpad, and schedules or sensors that pass none);
* every schedule and sensor here builds its run config with :func:`with_run_logging`,
  because a run request's own run config *replaces* the job's default config;
* the CLI (``trading_pipeline.runs``) does the same, with its log level.
"""

import logging
import sys
from collections.abc import Mapping
from typing import Any

import dagster as dg

LOGGER_KEY = "console"


def run_logging(log_level: str | None = None) -> dict[str, Any]:
    """Run config naming this location's console logger (optionally at ``log_level``)."""
    config: dict[str, Any] = {"config": {"log_level": log_level}} if log_level else {}
    return {"loggers": {LOGGER_KEY: config}}


def with_run_logging(run_config: Mapping[str, Any] | None = None, log_level: str | None = None) -> dict[str, Any]:
    """``run_config`` plus the console logger, unless it already names loggers."""
    out = dict(run_config or {})
    if log_level is not None or not out.get("loggers"):
        out["loggers"] = run_logging(log_level)["loggers"]
    return out


@dg.logger(
    config_schema={
        # DEBUG like Dagster's own fallback logger: lifecycle events (STEP_START, RUN_SUCCESS...)
        "log_level": dg.Field(str, is_required=False, default_value="DEBUG", description="The logger's threshold."),
        "name": dg.Field(str, is_required=False, default_value="dagster", description="The logger's name."),
    },
    description="Console logger: key=value text, or JSON lines with TRADING_LOG_FORMAT=json (read at run start).",
)
def run_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    from trading_pipeline.logs import formatter
    from trading_pipeline.settings import Settings

    log_format = Settings().log_format  # the environment of this run's process, now
    out = logging.Logger(init_context.logger_config["name"], level=init_context.logger_config["log_level"].upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    out.addHandler(handler)
    return out


LOGGERS = {LOGGER_KEY: run_logger}
