"""GET /scans and /scans/{id}: what each scan found per session (`marts.scan_results`)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from trading_api.deps import ApiKeyRecord, Reader
from trading_api.routers._query import Filters, page
from trading_api.schemas import ErrorDetail, ScanDetail, ScanPage, ScanResult, Signal

router = APIRouter(tags=["scans"])

_NAME = r"^[A-Za-z0-9_.\-]{1,64}$"


def _with_id(row: dict) -> ScanResult:
    sd = row.get("session_date")
    return ScanResult(id=f"{row['scan']}:{row['timeframe']}:{sd.isoformat() if sd else ''}", **row)


@router.get("/scans", response_model=ScanPage, responses={503: {"model": ErrorDetail}}, summary="Scan results per session")
def list_scans(
    _key: ApiKeyRecord,
    reader: Reader,
    scan: Annotated[str | None, Query(pattern=_NAME)] = None,
    timeframe: Annotated[str | None, Query(pattern=_NAME)] = None,
    start: Annotated[date | None, Query()] = None,
    end: Annotated[date | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> ScanPage:
    def build(f: Filters) -> None:
        f.add("scan", "=", scan)
        f.add("timeframe", "=", timeframe)
        f.add("session_date", ">=", start)
        f.add("session_date", "<=", end)

    total, rows = page(reader, "marts.scan_results", build, ["session_date DESC", "scan", "timeframe"], limit, offset)
    return ScanPage(total=total, limit=limit, offset=offset, items=[_with_id(r) for r in rows])


@router.get(
    "/scans/{scan_id}",
    response_model=ScanDetail,
    responses={404: {"model": ErrorDetail}, 503: {"model": ErrorDetail}},
    summary="One scan's result for one session, with its signals",
)
def get_scan(
    _key: ApiKeyRecord,
    reader: Reader,
    scan_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,64}:[A-Za-z0-9_.\-]{1,16}:\d{4}-\d{2}-\d{2}$", description="scan:timeframe:YYYY-MM-DD")],
) -> ScanDetail:
    scan, timeframe, day = scan_id.split(":")
    try:
        session = date.fromisoformat(day)
    except ValueError:
        raise HTTPException(422, f"bad session date {day!r}") from None

    def build(f: Filters) -> None:
        f.add("scan", "=", scan)
        f.add("timeframe", "=", timeframe)
        f.add("session_date", "=", session)

    total, rows = page(reader, "marts.scan_results", build, ["scan"], 1, 0)
    if not rows:
        raise HTTPException(404, f"no scan result {scan_id}")
    _n, signals = page(reader, "marts.signals", build, ["score DESC", "symbol", "kind"], 1000, 0)
    return ScanDetail(result=_with_id(rows[0]), signals=[Signal(**s) for s in signals])
