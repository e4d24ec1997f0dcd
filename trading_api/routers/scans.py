"""GET /scans and /scans/{id}: what each scan found per session (`marts.scan_results`)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response

from trading_api.deps import ApiKeyRecord, Reader, require_scope
from trading_api.routers._params import QueryDate, field_error
from trading_api.routers._query import Filters, page_json, page_rows, snapshot_json
from trading_api.schemas import (
    READ_RESPONSES,
    ErrorDetail,
    ScanDetail,
    ScanPage,
    ScanResult,
    Signal,
)

router = APIRouter(tags=["scans"], responses=READ_RESPONSES, dependencies=[Depends(require_scope("read"))])

_NAME = r"^[A-Za-z0-9_.\-]{1,64}$"


def _with_id(row: dict) -> ScanResult:
    sd = row.get("session_date")
    return ScanResult(id=f"{row['scan']}:{row['timeframe']}:{sd.isoformat() if sd else ''}", **row)


@router.get("/scans", response_model=ScanPage, summary="Scan results per session")
async def list_scans(
    request: Request,
    _key: ApiKeyRecord,
    reader: Reader,
    scan: Annotated[str | None, Query(pattern=_NAME)] = None,
    timeframe: Annotated[str | None, Query(pattern=_NAME)] = None,
    start: Annotated[QueryDate | None, Query(description="First session date, inclusive.")] = None,
    end: Annotated[QueryDate | None, Query(description="Last session date, inclusive.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    def build(f: Filters) -> None:
        f.add("scan", "=", scan)
        f.add("timeframe", "=", timeframe)
        f.add("session_date", ">=", start)
        f.add("session_date", "<=", end)

    return await page_json(
        request, reader, "marts.scan_results", build, ["session_date DESC", "scan", "timeframe"], limit, offset,
        lambda total, rows: ScanPage(total=total, limit=limit, offset=offset, items=[_with_id(r) for r in rows]),
    )


@router.get(
    "/scans/{scan_id}",
    response_model=ScanDetail,
    responses={404: {"model": ErrorDetail}},
    summary="One scan's result for one session, with its signals",
)
async def get_scan(
    request: Request,
    _key: ApiKeyRecord,
    reader: Reader,
    scan_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,64}:[A-Za-z0-9_.\-]{1,16}:\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$", description="scan:timeframe:YYYY-MM-DD")],
) -> Response:
    scan, timeframe, day = scan_id.split(":")
    try:
        session = date.fromisoformat(day)
    except ValueError:
        raise field_error(("path", "scan_id"), f"bad session date {day!r}") from None

    def build(f: Filters) -> None:
        f.add("scan", "=", scan)
        f.add("timeframe", "=", timeframe)
        f.add("session_date", "=", session)

    def compute(gen, cur) -> ScanDetail:  # noqa: ANN001
        _total, rows = page_rows(gen, cur, "marts.scan_results", build, ["scan"], 1, 0)
        if not rows:
            raise HTTPException(404, f"no scan result {scan_id}")
        _n, signals = page_rows(gen, cur, "marts.signals", build, ["score DESC", "symbol", "kind"], 1000, 0)
        return ScanDetail(result=_with_id(rows[0]), signals=[Signal(**s) for s in signals])

    return await snapshot_json(request, reader, ("scan", scan, timeframe, session), compute)
