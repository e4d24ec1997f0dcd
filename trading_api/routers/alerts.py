"""GET /alerts: signals at or above their scan's alert threshold (`marts.alerts`)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from trading_api.deps import ApiKeyRecord, Reader
from trading_api.routers._query import Filters, page
from trading_api.schemas import Alert, AlertPage, ErrorDetail

router = APIRouter(tags=["alerts"])

_NAME = r"^[A-Za-z0-9_.\-/=^]{1,64}$"


@router.get("/alerts", response_model=AlertPage, responses={503: {"model": ErrorDetail}}, summary="Alerts, newest first")
def list_alerts(
    _key: ApiKeyRecord,
    reader: Reader,
    start: Annotated[date | None, Query(description="First session date, inclusive.")] = None,
    end: Annotated[date | None, Query(description="Last session date, inclusive.")] = None,
    kind: Annotated[str | None, Query(pattern=_NAME)] = None,
    symbol: Annotated[str | None, Query(pattern=_NAME)] = None,
    scan: Annotated[str | None, Query(pattern=_NAME)] = None,
    min_score: Annotated[float | None, Query(ge=-1e12, le=1e12)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> AlertPage:
    if start and end and start > end:
        raise HTTPException(422, "start is after end")

    def build(f: Filters) -> None:
        f.add("session_date", ">=", start)
        f.add("session_date", "<=", end)
        f.add("kind", "=", kind)
        f.add("symbol", "=", symbol.upper() if symbol else None)
        f.add("scan", "=", scan)
        f.add("score", ">=", min_score)

    total, rows = page(reader, "marts.alerts", build, ["ts DESC", "score DESC", "alert_id"], limit, offset)
    return AlertPage(total=total, limit=limit, offset=offset, items=[Alert(**r) for r in rows])
