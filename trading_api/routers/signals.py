"""GET /signals: the dbt `marts.signals` rows, filtered and paginated."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from trading_api.deps import ApiKeyRecord, Reader, require_scope
from trading_api.routers._params import QueryDate, field_error
from trading_api.routers._query import Filters, page_json
from trading_api.schemas import READ_RESPONSES, Signal, SignalPage

router = APIRouter(tags=["signals"], responses=READ_RESPONSES, dependencies=[Depends(require_scope("read"))])

_NAME = r"^[A-Za-z0-9_.\-/=^]{1,64}$"


@router.get(
    "/signals",
    response_model=SignalPage,
    summary="Signals (breakout, CRP, CPR) with filters and pagination",
)
async def list_signals(
    request: Request,
    _key: ApiKeyRecord,
    reader: Reader,
    start: Annotated[QueryDate | None, Query(description="First session date, inclusive.")] = None,
    end: Annotated[QueryDate | None, Query(description="Last session date, inclusive.")] = None,
    kind: Annotated[str | None, Query(pattern=_NAME, description="breakout_up, breakout_down, crp_long, crp_short, cpr_narrow.")] = None,
    symbol: Annotated[str | None, Query(pattern=_NAME)] = None,
    scan: Annotated[str | None, Query(pattern=_NAME, description="Scan name from rules.yaml.")] = None,
    timeframe: Annotated[str | None, Query(pattern=_NAME)] = None,
    direction: Annotated[str | None, Query(pattern=r"^(long|short|neutral)$")] = None,
    min_score: Annotated[float | None, Query(ge=-1e12, le=1e12)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    """Newest first (bar time, then score). Answers carry an ETag (snapshot sequence + query):
    send it back in ``If-None-Match`` to get ``304`` until the next publish."""
    if start and end and start > end:
        raise field_error(("query", "end"), "end is before start")

    def build(f: Filters) -> None:
        f.add("session_date", ">=", start)
        f.add("session_date", "<=", end)
        f.add("kind", "=", kind)
        f.add("symbol", "=", symbol.upper() if symbol else None)
        f.add("scan", "=", scan)
        f.add("timeframe", "=", timeframe)
        f.add("direction", "=", direction)
        f.add("score", ">=", min_score)

    return await page_json(
        request, reader, "marts.signals", build, ["ts DESC", "score DESC", "symbol", "kind"], limit, offset,
        lambda total, rows: SignalPage(total=total, limit=limit, offset=offset, items=[Signal(**r) for r in rows]),
    )
