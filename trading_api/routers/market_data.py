"""GET /market-data/{symbol}: bars with their indicators, from the snapshot; GET /market-data:
which symbols and timeframes have bars (what a client can chart)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response

from trading_api.deps import ApiKeyRecord, Reader, require_scope
from trading_api.routers._params import QueryDateTime, field_error
from trading_api.routers._query import snapshot_json
from trading_api.schemas import READ_RESPONSES, Bar, ErrorDetail, MarketData, Series, SeriesList
from trading_api.snapshot import clean
from trading_pipeline.marketdata.bars import TIMEFRAMES
from trading_pipeline.trading.orders import to_naive_utc

router = APIRouter(tags=["market data"], responses=READ_RESPONSES, dependencies=[Depends(require_scope("read"))])

BAR_FIELDS = ("symbol", "timeframe", "ts", "session_date", "open", "high", "low", "close", "volume")
_HIDDEN = {"source", "ingested_at", "computed_at"}
Timeframe = Literal[tuple(TIMEFRAMES)]  # type: ignore[valid-type]  # marketdata/bars.py, the one list


TIMEFRAMES: tuple[str, ...] = Timeframe.__args__  # type: ignore[attr-defined]
SERIES_ORDER = ("1d", "1h", "30m", "15m", "5m", "1m")  # how GET /market-data lists a symbol's series
_SYMBOL = r"^[A-Za-z0-9][A-Za-z0-9._\-/=^]{0,31}$"


def _source(gen: Any, timeframe: str, prices: str = "adjusted") -> str | None:
    """The snapshot table GET /market-data/{symbol} reads ``timeframe`` bars from: the marts
    (adjusted bars with their indicators; the raw bars when no mart is published), or with
    ``prices="raw"`` the raw bars as loaded (no indicators: those are computed on adjusted bars)."""
    raw = "raw.bars_daily" if timeframe == "1d" else "raw.bars_intraday"
    if prices == "raw":
        return raw if gen.has(raw) else None
    mart = "marts.indicators_daily" if timeframe == "1d" else "marts.indicators_intraday"
    return next((t for t in (mart, raw) if gen.has(t)), None)


@router.get("/market-data", response_model=SeriesList, summary="Symbols and timeframes that have bars")
async def list_series(
    request: Request,
    _key: ApiKeyRecord,
    reader: Reader,
    symbol: Annotated[str | None, Query(pattern=_SYMBOL, description="Only this symbol's series.")] = None,
) -> Response:
    """Every (symbol, timeframe) that GET /market-data/{symbol} answers with bars, with the
    number of bars and the first and last bar's start, ordered by symbol, then daily first
    and intraday from the longest bar down."""
    sym = symbol.upper() if symbol else None

    def compute(gen: Any, cur: Any) -> SeriesList:
        items: list[Series] = []
        for table in dict.fromkeys(t for t in (_source(gen, "1d"), _source(gen, "1h")) if t):
            daily = table.endswith("_daily")
            has_tf = "timeframe" in gen.columns[table]
            where, params = [], []
            if daily and has_tf:
                where.append("timeframe = '1d'")
            if sym is not None:
                where.append("symbol = ?")
                params.append(sym)
            tf = "timeframe" if has_tf else "NULL"
            rows = cur.execute(
                f"SELECT symbol, {tf}, count(*), min(ts), max(ts) FROM {table}"
                f"{' WHERE ' + ' AND '.join(where) if where else ''} GROUP BY ALL",
                params,
            ).fetchall()
            for s, t, n, first, last in rows:
                t = "1d" if daily else t
                if t in TIMEFRAMES and t in SERIES_ORDER:
                    items.append(Series(symbol=s, timeframe=t, bars=n, first_ts=first, last_ts=last))
        items.sort(key=lambda x: (x.symbol, SERIES_ORDER.index(x.timeframe)))
        return SeriesList(count=len(items), items=items)

    return await snapshot_json(request, reader, ("market-data-series", sym), compute)


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
    prices: Annotated[Literal["adjusted", "raw"], Query(
        description="adjusted (default): bars adjusted for splits (and dividends with "
        "TRADING_PRICE_ADJUSTMENT=total_return) with every indicator; raw: the bars as loaded, "
        "without indicators.")] = "adjusted",
) -> Response:
    """The newest ``limit`` bars in [start, end], oldest first, with every indicator the
    snapshot has (from ``marts.indicators_*`` when published, else the raw bars alone);
    ``prices=raw`` gives the bars as loaded, before split and dividend adjustment."""
    symbol = symbol.upper()
    start = to_naive_utc(start) if start else None
    end = to_naive_utc(end) if end else None
    if start and end and start > end:
        raise field_error(("query", "end"), "end is before start")
    def compute(gen: Any, cur: Any) -> MarketData:
        source = _source(gen, timeframe, prices)
        if source is None:
            raise HTTPException(404, f"no {'raw ' if prices == 'raw' else ''}{timeframe} bars in the serving snapshot"
                                     f"{' (a DuckDB-file warehouse publishes the marts only)' if prices == 'raw' else ' yet'}")
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
        adjustment = "none" if source.startswith("raw.") else None
        for row in rows:
            rec = {c: clean(v) for c, v in zip(names, row, strict=True)}
            adjustment = rec.pop("adjustment", None) or adjustment
            base = {k: rec.pop(k) for k in BAR_FIELDS if k in rec}
            base.setdefault("timeframe", timeframe)
            indicators = {k: v if v is None or isinstance(v, float | int | bool | str) else str(v) for k, v in rec.items()}
            bars.append(Bar(**base, indicators=indicators))
        if not bars and start is None and end is None:
            raise HTTPException(404, f"no {timeframe} bars for {symbol}")
        return MarketData(symbol=symbol, timeframe=timeframe, source=source, adjustment=adjustment,
                          count=len(bars), bars=bars)

    return await snapshot_json(request, reader, ("market-data", symbol, timeframe, start, end, limit, prices), compute)
