"""The FastAPI app: REST + WebSocket push over the serving snapshot and the ops store.

``create_app(settings)`` builds it (tests pass their own settings); ``app`` is what uvicorn
loads (``uvicorn trading_api.main:app`` or ``trading api``). The app never opens the
warehouse (docs/decisions.md #1): market data, signals, scans and alerts come from the serving
snapshot; orders, positions, risk and API keys from the ops store.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trading_api.deps import AppState, OpsStoreUnavailable
from trading_api.response_cache import ResponseCache
from trading_api.routers import (
    accounts,
    alerts,
    dashboard,
    health,
    market_data,
    orders,
    portfolio,
    portfolio_risk,
    positions,
    rebalance,
    risk,
    scans,
    signals,
)
from trading_api.routers._params import single_valued_query
from trading_api.routers.docs import docs_router
from trading_api.routers.metrics import install_metrics
from trading_api.snapshot import SnapshotReader, SnapshotUnavailable
from trading_api.ws import Hub
from trading_api.ws import router as ws_router
from trading_pipeline import logs
from trading_pipeline.serving.snapshot import SNAPSHOT_NAME
from trading_pipeline.settings import Settings, get_settings
from trading_pipeline.trading.accounts import AccountsError

access_log = logs.get_logger("trading_api.access")
log = logs.get_logger("trading_api")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class RequestContext:
    """Pure ASGI middleware: a request id per request (X-Request-ID) and one log line each."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = None
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                text = v.decode("latin-1")
                rid = text if _REQUEST_ID.match(text) else None
                break
        rid = rid or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        status = {"code": 0}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if scope["type"] == "http" or access_log.isEnabledFor(logging.DEBUG):
                access_log.info(
                    "request",
                    request_id=rid,
                    method=scope.get("method", "WS"),
                    path=scope.get("path"),
                    status=status["code"] or (101 if scope["type"] == "websocket" else 500),
                    duration_ms=round((time.perf_counter() - start) * 1000, 2),
                    key_id=scope["state"].get("api_key_id", "-"),
                    client=(scope.get("client") or ("-",))[0],
                )


def _error(request: Request, status_code: int, detail: Any, headers: dict | None = None) -> JSONResponse:
    rid = getattr(request.state, "request_id", None)
    return JSONResponse({"detail": detail, "request_id": rid}, status_code=status_code, headers=headers)


def _allowed(app: FastAPI, path: str) -> list[str]:
    """Every method the API serves at ``path`` (from the OpenAPI paths, templates as regexes)."""
    table = getattr(app.state, "allow_table", None)
    if table is None:
        table = []
        for template, ops in app.openapi()["paths"].items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            table.append((re.compile(pattern), sorted(m.upper() for m in ops)))
        app.state.allow_table = table
    return sorted({m for pattern, methods in table if pattern.fullmatch(path) for m in methods})


def create_app(
    settings: Settings | None = None,
    *,
    poll_interval: float | None = None,
    heartbeat: float | None = None,
    queue_size: int | None = None,
) -> FastAPI:
    """Build the app. WebSocket knobs default to the settings TRADING_WS_POLL_INTERVAL,
    TRADING_WS_HEARTBEAT and TRADING_WS_QUEUE_SIZE (0.2 s, 15 s, 1000)."""
    settings = settings or get_settings()
    state = AppState(settings=settings, reader=SnapshotReader(settings.serving_dir / SNAPSHOT_NAME))
    state.hub = Hub(
        state,
        poll_interval=poll_interval or settings.ws_poll_interval,
        heartbeat=heartbeat or settings.ws_heartbeat,
        queue_size=queue_size or settings.ws_queue_size,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("api_start", serving=state.reader.path, ops_store=settings.ops_store_url.split("@")[-1])
        await state.hub.start()
        try:
            yield
        finally:
            await state.hub.stop()
            state.close()
            log.info("api_stop")

    app = FastAPI(
        title="Trading API",
        version="0.1.0",
        summary="Signals, market data, scans and alerts from the serving snapshot; orders, positions and risk from the ops store.",
        description=(
            "Every data route needs an API key (`trading api-key create NAME`) in `X-API-Key` "
            "or `Authorization: Bearer`; `/health`, these docs (`/docs`, `/redoc`, `/openapi.json`) and "
            "the dashboard's static files are open (they hold no data). WebSocket push at `/ws` "
            "(key in `api_key` query param or the same headers)."
        ),
        lifespan=lifespan,
        docs_url=None,  # served by routers/docs.py from local assets (FastAPI's load from a CDN)
        redoc_url=None,
        dependencies=[Depends(single_valued_query)],
    )
    app.state.trading = state

    @app.exception_handler(SnapshotUnavailable)
    async def _snapshot_unavailable(request: Request, exc: SnapshotUnavailable) -> JSONResponse:
        return _error(request, 503, exc.reason, {"Retry-After": "1"})

    @app.exception_handler(OpsStoreUnavailable)
    async def _ops_unavailable(request: Request, exc: OpsStoreUnavailable) -> JSONResponse:
        return _error(request, 503, str(exc), {"Retry-After": "5"})

    @app.exception_handler(AccountsError)
    async def _accounts_unusable(request: Request, exc: AccountsError) -> JSONResponse:
        return _error(request, 503, f"accounts file unusable (TRADING_ACCOUNTS_FILE): {exc}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            headers = {**(headers or {}), "Allow": ", ".join(_allowed(app, request.url.path))}
        return _error(request, exc.status_code, exc.detail, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()]
        return _error(request, 422, errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", request_id=getattr(request.state, "request_id", None), path=request.url.path)
        return _error(request, 500, f"internal error ({type(exc).__name__}); see the API log")

    for module in (health, market_data, signals, scans, alerts, orders, positions, portfolio, accounts, risk, portfolio_risk, rebalance, dashboard):
        app.include_router(module.router)
    from trading_api.routers import kill_switch, me  # issue 19: key scopes and the kill switch

    app.include_router(me.router)
    app.include_router(kill_switch.router)
    from trading_api.routers import api_keys  # issue 19 follow-up: key administration over the API

    app.include_router(api_keys.router)
    app.include_router(ws_router)
    app.include_router(docs_router(app))

    app.add_middleware(ResponseCache, state=state)  # innermost: CORS, logs and metrics see its answers
    from trading_api.rate_limit import RateLimit  # outside the cache, so cached answers count too

    app.add_middleware(RateLimit, per_minute=settings.api_rate_limit)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["X-API-Key", "Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
        expose_headers=["X-Request-ID"],
        max_age=600,
    )
    app.add_middleware(RequestContext)
    install_metrics(app)
    return app


app = create_app()
