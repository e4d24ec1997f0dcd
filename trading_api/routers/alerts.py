"""GET /alerts: signals at or above their scan's alert threshold (`marts.alerts`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from trading_api.deps import ApiKeyRecord, Reader, require_scope
from trading_api.routers._params import QueryDate, field_error
from trading_api.routers._query import Filters, page_json
from trading_api.schemas import READ_RESPONSES, Alert, AlertPage

router = APIRouter(tags=["alerts"], responses=READ_RESPONSES, dependencies=[Depends(require_scope("read"))])

_NAME = r"^[A-Za-z0-9_.\-/=^]{1,64}$"


@router.get("/alerts", response_model=AlertPage, summary="Alerts, newest first")
async def list_alerts(
    request: Request,
    _key: ApiKeyRecord,
    reader: Reader,
    start: Annotated[QueryDate | None, Query(description="First session date, inclusive.")] = None,
    end: Annotated[QueryDate | None, Query(description="Last session date, inclusive.")] = None,
    kind: Annotated[str | None, Query(pattern=_NAME)] = None,
    symbol: Annotated[str | None, Query(pattern=_NAME)] = None,
    scan: Annotated[str | None, Query(pattern=_NAME)] = None,
    min_score: Annotated[float | None, Query(ge=-1e12, le=1e12)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    """Newest first; ETag and ``If-None-Match`` as for ``/signals``."""
    if start and end and start > end:
        raise field_error(("query", "end"), "end is before start")

    def build(f: Filters) -> None:
        f.add("session_date", ">=", start)
        f.add("session_date", "<=", end)
        f.add("kind", "=", kind)
        f.add("symbol", "=", symbol.upper() if symbol else None)
        f.add("scan", "=", scan)
        f.add("score", ">=", min_score)

    return await page_json(
        request, reader, "marts.alerts", build, ["ts DESC", "score DESC", "alert_id"], limit, offset,
        lambda total, rows: AlertPage(total=total, limit=limit, offset=offset, items=[Alert(**r) for r in rows]),
    )
