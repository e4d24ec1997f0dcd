"""GET /market-data/{symbol}: bars with their indicators, from the snapshot."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response

from trading_api.deps import ApiKeyRecord, Reader
from trading_api.routers._params import QueryDateTime, field_error
from trading_api.routers._query import snapshot_json
from trading_api.schemas import AUTH_RESPONSES, Bar, ErrorDetail, MarketData
from trading_api.snapshot import clean
from trading_pipeline.orders import to_naive_utc

router = APIRouter(tags=["market data"], responses=AUTH_RESPONSES)

BAR_FIELDS = ("symbol", "timeframe", "ts", "session_date", "open", "high", "low", "close", "volume")
_HIDDEN = {"source", "ingested_at", "computed_at"}
Timeframe = Literal["1m", "5m", "15m", "30m", "1h", "1d"]


@router.get(
    "/market-data/{symbol}",
    response_model=MarketData,
    responses={404: {"model": ErrorDetail}},
    summary="Bars with indicators for one symbol",
)
async def market_data(
    request: Request,
    _key: ApiKeyRecord,
    reader: Reader,
    symbol: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/=^]{0,31}$")],
    timeframe: Annotated[Timeframe, Query(description="Bar size.")] = "1d",
    start: Annotated[QueryDateTime | None, Query(description="First bar start (UTC), inclusive; a date means midnight.")] = None,
    end: Annotated[QueryDateTime | None, Query(description="Last bar start (UTC), inclusive.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many bars: the latest ones in the range.")] = 500,
) -> Response:
    """The newest ``limit`` bars in [start, end], oldest first, with every indicator the
    snapshot has (from ``marts.indicators_*`` when published, else the raw bars alone)."""
    symbol = symbol.upper()
    start = to_naive_utc(start) if start else None
    end = to_naive_utc(end) if end else None
    if start and end and start > end:
        raise field_error(("query", "end"), "end is before start")
    def compute(gen: Any, cur: Any) -> MarketData:
        if timeframe == "1d":
            candidates = ("marts.indicators_daily", "raw.bars_daily")
        else:
            candidates = ("marts.indicators_intraday", "raw.bars_intraday")
        source = next((t for t in candidates if gen.has(t)), None)
        if source is None:
            raise HTTPException(404, f"no {timeframe} bars in the serving snapshot yet")
        cols = gen.columns[source]
        where = ["symbol = ?"]
        params: list = [symbol]
        if "timeframe" in cols:
            where.append("timeframe = ?")
            params.append(timeframe)
        if start is not None:
            where.append("ts >= ?")
            params.append(to_naive_utc(start))
        if end is not None:
            where.append("ts <= ?")
            params.append(to_naive_utc(end))
        select = ", ".join(f'"{c}"' for c in cols if c not in _HIDDEN)
        rows = cur.execute(
            f"SELECT * FROM (SELECT {select} FROM {source} WHERE {' AND '.join(where)} "
            f"ORDER BY ts DESC LIMIT ?) ORDER BY ts",
            [*params, limit],
        ).fetchall()
        names = [d[0] for d in cur.description]
        bars = []
        for row in rows:
            rec = {c: clean(v) for c, v in zip(names, row, strict=True)}
            base = {k: rec.pop(k) for k in BAR_FIELDS if k in rec}
            base.setdefault("timeframe", timeframe)
            indicators = {k: v if v is None or isinstance(v, float | int | bool | str) else str(v) for k, v in rec.items()}
            bars.append(Bar(**base, indicators=indicators))
        if not bars and start is None and end is None:
            raise HTTPException(404, f"no {timeframe} bars for {symbol}")
        return MarketData(symbol=symbol, timeframe=timeframe, source=source, count=len(bars), bars=bars)

    return await snapshot_json(request, reader, ("market-data", symbol, timeframe, start, end, limit), compute)
