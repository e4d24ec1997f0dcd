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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and every key=value of the message."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        for key, value in _PAIR.findall(msg):
            if key not in out:
                out[key] = value[1:-1] if value.startswith('"') and value.endswith('"') else value
        for attr in _CONTEXT:
            if attr not in out and getattr(record, attr, None) is not None:
                out[attr] = getattr(record, attr)
        meta = getattr(record, "dagster_meta", None)
        if isinstance(meta, dict):
            for attr in _CONTEXT:
                if attr not in out and meta.get(attr):
                    out[attr] = meta[attr]
        out["msg"] = msg
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format != "text":
        raise ValueError(f"TRADING_LOG_FORMAT must be 'text' or 'json', got {log_format!r}")
    return logging.Formatter(TEXT_FORMAT)
