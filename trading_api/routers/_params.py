"""Parameter types and errors shared by the routers, so that every malformed request gets the
same 422 shape: ``{"detail": [{"type", "loc", "msg"}], "request_id"}``.

Pydantic's lax date parsing reads numbers as Unix timestamps (``start=0`` is 1970-01-01,
``start=20240101`` is 1970-08-23T06:15:01Z); ``QueryDate`` and ``QueryDateTime`` accept ISO
8601 text only, which is what the OpenAPI schema declares.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator, WithJsonSchema
from starlette.requests import HTTPConnection

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([Zz]|[+-]\d{2}:?\d{2})?)?")


def _iso(pattern: re.Pattern[str], expected: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, str) and not pattern.fullmatch(value):
            raise ValueError(f"expected {expected}")
        return value

    return BeforeValidator(check)


QueryDate = Annotated[date, _iso(_DATE, "a date as YYYY-MM-DD")]
QueryDateTime = Annotated[
    datetime,
    _iso(_DATETIME, "an ISO 8601 date-time (UTC unless it has an offset) or a date (midnight UTC)"),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}]}),
]


async def single_valued_query(connection: HTTPConnection) -> None:
    """422 when a query parameter is given more than once (every parameter of this API is
    single-valued; FastAPI would silently keep the last value)."""
    keys = [k for k, _ in connection.query_params.multi_items()]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", k), "msg": f"{k} given more than once; give it once"} for k in repeated]
        )


def field_error(loc: tuple[str | int, ...], msg: str) -> RequestValidationError:
    """A 422 for a parameter that is valid alone but not with the others (e.g. start after end)."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg}])
