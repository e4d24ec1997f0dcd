"""Log lines as key=value text (default) or JSON (``TRADING_LOG_FORMAT=json``).

Our events are written as ``event=name key=value ...``; the JSON formatter lifts those pairs
into fields, so a log pipeline can join an API request (``request_id``, ``client_order_id``)
with the Dagster run that acted on it (``run_id``, ``client_order_id``) without parsing text.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

TEXT_FORMAT = "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
_PAIR = re.compile(r'(?:(?<=\s)|^)([A-Za-z_][\w.]*)=("(?:[^"\\]|\\.)*"|\S+)')
_CONTEXT = ("run_id", "request_id", "step_key", "job_name")


def run_fields(record: logging.LogRecord) -> dict[str, str] | None:
    """A Dagster run's log record (``dagster_meta``): its context and the message proper.

    Dagster hands its loggers ``job - run_id - pid - step - EVENT - message`` plus any error;
    this returns ``run_id``, ``job_name``, ``step_key``, ``dagster_event`` (the event type,
    e.g. ``STEP_FAILURE``), ``message`` (what the code logged) and ``error``, leaving out the
    empty ones. None for any other record.
    """
    meta = getattr(record, "dagster_meta", None)
    if not isinstance(meta, dict):
        return None
    out = {attr: str(meta[attr]) for attr in _CONTEXT if meta.get(attr)}
    event_type = getattr(meta.get("dagster_event"), "event_type_value", None)
    if event_type:  # as Dagster displays it: RUN_START for the legacy PIPELINE_START
        out["dagster_event"] = str(event_type).replace("PIPELINE_", "RUN_", 1)
    orig = str(meta.get("orig_message") or "")
    full = record.getMessage()
    _, found, tail = full.partition(orig) if orig else ("", "", "")
    out["message"] = orig if found else full
    if found and tail.strip():
        out["error"] = tail.strip()
    return out


def one_line_error(error: str) -> str:
    """``Class: message`` of a Dagster error text, on one line, without the stack trace."""
    head = error.split("Stack Trace:", 1)[0]
    text = " ".join(line.strip() for line in head.splitlines() if line.strip())
    text = re.sub(r"\b(?:[a-z_][\w]*\.)+(?=[A-Z]\w*(?:Error|Exception|Interrupt)\b)", "", text)
    return text.replace('"', "'")


class TextFormatter(logging.Formatter):
    """``ts=... level=... logger=... message``; a Dagster run's lines start with its context."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        run = run_fields(record)
        if run is None:
            return super().format(record)
        context = " ".join(f"{k}={v}" for k, v in run.items() if k not in ("message", "error"))
        text = f"{context} {run['message']}" if context else run["message"]
        if "error" in run:  # one event, one line: the error without its stack trace (the run's
            # event log in the Dagster UI keeps the whole trace)
            text += f' error="{one_line_error(run["error"])}"'
        flat = logging.makeLogRecord({**record.__dict__, "msg": text, "args": ()})
        return super().format(flat)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and every key=value of the message.

    On a Dagster run's lines the run's context (``run_id``, ``job_name``, ``step_key``,
    ``dagster_event``) comes first and wins over a same-named pair in the message; ``msg`` is
    what the code logged, and a failure's error is in ``error``.
    """

    def format(self, record: logging.LogRecord) -> str:
        run = run_fields(record)
        msg = run.pop("message") if run else record.getMessage()
        error = run.pop("error", None) if run else None
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            **(run or {}),
        }
        for key, value in _PAIR.findall(msg):
            if key not in out:
                out[key] = value[1:-1] if value.startswith('"') and value.endswith('"') else value
        for attr in _CONTEXT:
            if attr not in out and getattr(record, attr, None) is not None:
                out[attr] = getattr(record, attr)
        out["msg"] = msg
        if error:
            out["error"] = error
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format != "text":
        raise ValueError(f"TRADING_LOG_FORMAT must be 'text' or 'json', got {log_format!r}")
    return TextFormatter()
