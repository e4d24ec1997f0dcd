"""Log lines as key=value text (default) or JSON (``TRADING_LOG_FORMAT=json``), with structlog.

Our events are structured: ``log = logs.get_logger(__name__)`` then
``log.info("order_submitted", client_order_id=coid, status=status)``. Each event goes out as a
stdlib ``logging`` record whose message is the event as text (``event=order_submitted
client_order_id=... status=...``, rendered by :func:`event_text`) and whose ``event_fields``
attribute holds the fields themselves. The handlers' formatters (structlog's
``ProcessorFormatter``: :class:`TextFormatter`, :class:`JsonFormatter`) take the fields from
there, not from the text, and format every other stdlib record (uvicorn, Dagster, libraries)
the same way. So with ``TRADING_LOG_FORMAT=json`` a log pipeline can join an API request
(``request_id``, ``client_order_id``) with the Dagster run that acted on it (``run_id``,
``client_order_id``) without parsing text; and a handler that is not ours (pytest's log
capture, Python's last-resort handler) still shows the readable ``event=...`` line rather than
a dict.

Dagster's ``context.log`` is a Dagster log manager, not a logger we configure: it builds its
own message (``job - run_id - ... - message``) and hands it to the run's loggers
(``defs/run_logs.py``). Ops log through :func:`run_event`, which passes the same text as the
message and the fields as ``extra``; Dagster carries both to our run logger, so a run's events
look like everyone else's in both formats (with the run's ``run_id``, ``job_name``,
``step_key``, :func:`run_fields`).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import structlog
from structlog.stdlib import ProcessorFormatter
from structlog.typing import EventDict, WrappedLogger

TEXT_FORMAT = "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
FIELDS_ATTR = "event_fields"  # the LogRecord attribute holding an event's fields
_CONTEXT = ("run_id", "request_id", "step_key", "job_name")
_LOGFMT = structlog.processors.LogfmtRenderer(key_order=["event"], drop_missing=True, bool_as_flag=False)


def event_text(event: str, **fields: object) -> str:
    """``event=name key=value ...``: one event as text (values with spaces, quotes or ``=``
    quoted, newlines escaped, so one event stays one line)."""
    return _LOGFMT(None, "", {"event": event, **fields})


def _to_stdlib(_: WrappedLogger, __: str, event_dict: EventDict) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Last processor of our loggers: the stdlib record's message is the event's text, its
    fields ride along in ``event_fields`` (see the module docstring)."""
    kwargs = {k: event_dict.pop(k) for k in ("exc_info", "stack_info", "stacklevel") if k in event_dict}
    event = str(event_dict.pop("event"))
    return (event_text(event, **event_dict),), {**kwargs, "extra": {FIELDS_ATTR: {"event": event, **event_dict}}}


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger over the stdlib logger ``name`` (levels and handlers are stdlib's)."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),  # log.warning("... %s", x)
            _to_stdlib,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def run_event(log: logging.Logger, event: str, /, *, level: str = "info", **fields: object) -> None:
    """Log an event on a Dagster run's ``context.log``: its text as the message (what Dagster's
    UI and event log show), its fields as ``extra`` (what the JSON lines show)."""
    getattr(log, level)(event_text(event, **fields), extra={FIELDS_ATTR: {"event": event, **fields}})


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


def _fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """First processor of both formatters, for every record: ``ts``, ``level``, ``logger``, a
    Dagster run's context (which wins over a same-named field of the event), the event's
    fields, ``request_id`` & co. set as record attributes, ``msg`` (the text logged) and a run's
    ``error``. Internal keys (``_record``, ``exc_info``) are kept for the renderers."""
    record: logging.LogRecord = event_dict["_record"]
    run = run_fields(record) or {}
    msg = run.pop("message", None) or event_dict["event"]
    error = run.pop("error", None)
    out: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        **run,
    }
    for key, value in (getattr(record, FIELDS_ATTR, None) or {}).items():
        out.setdefault(key, value)
    for attr in _CONTEXT:
        if attr not in out and getattr(record, attr, None) is not None:
            out[attr] = getattr(record, attr)
    out["msg"] = msg
    if error:
        out["error"] = error
    internal = {k: v for k, v in event_dict.items() if k.startswith("_") or k in ("exc_info", "stack_info")}
    return {**out, **internal}


def _text_message(_: WrappedLogger, __: str, event_dict: EventDict) -> str:
    """The ``%(message)s`` of :data:`TEXT_FORMAT`: what was logged; on a Dagster run's lines
    its context first and the error last, without its stack trace (one event, one line; the
    run's event log in the Dagster UI keeps the whole trace)."""
    run = run_fields(event_dict["_record"])
    if run is None:
        return event_dict["msg"]
    context = _LOGFMT(None, "", {k: v for k, v in run.items() if k not in ("message", "error")})
    text = f"{context} {run['message']}" if context else run["message"]
    if "error" in run:
        text += " " + _LOGFMT(None, "", {"error": one_line_error(run["error"])})
    return text


def _json_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The JSON object: :func:`_fields` without the internal keys, plus ``exc`` (the traceback)."""
    exc_info = event_dict.get("exc_info")
    out = {k: v for k, v in event_dict.items() if not k.startswith("_") and k not in ("exc_info", "stack_info")}
    if exc_info:
        out["exc"] = logging.Formatter().formatException(exc_info)
    return out


class TextFormatter(ProcessorFormatter):
    """``ts=... level=... logger=... event=name key=value ...``; a Dagster run's lines start with
    its context (``run_id=... step_key=... job_name=...``). A traceback follows its line."""

    def __init__(self) -> None:
        super().__init__(foreign_pre_chain=[_fields], processors=[_text_message], fmt=TEXT_FORMAT, keep_exc_info=True)


class JsonFormatter(ProcessorFormatter):
    """One JSON object per line: ts, level, logger, [a run's context], the event's fields, msg,
    [error], [exc].

    On a Dagster run's lines the run's context (``run_id``, ``job_name``, ``step_key``,
    ``dagster_event``) comes first and wins over a same-named field of the event; ``msg`` is
    what the code logged, and a failure's error is in ``error``.
    """

    def __init__(self) -> None:
        super().__init__(foreign_pre_chain=[_fields],
                         processors=[_json_fields, structlog.processors.JSONRenderer(default=str)])


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format != "text":
        raise ValueError(f"TRADING_LOG_FORMAT must be 'text' or 'json', got {log_format!r}")
    return TextFormatter()
