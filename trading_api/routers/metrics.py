"""GET /metrics: Prometheus text format for the API and the state it serves.

``install_metrics(app)`` adds a pure ASGI middleware that counts requests and times them,
and includes this router. Series:

* ``trading_api_requests_total{method,route,status}``: requests by route template
  (``/orders/{client_order_id}``, not the raw path, so cardinality stays bounded).
* ``trading_api_request_duration_seconds{method,route}``: latency histogram.
* ``trading_api_websocket_clients``: WebSocket clients connected (the hub's client count;
  with several workers, open ``/ws`` connections summed over live workers, see below).
* ``trading_snapshot_up``, ``trading_snapshot_age_seconds``, ``trading_snapshot_sequence``:
  the serving snapshot the API reads (age since it was published).
* ``trading_ops_store_up``, ``trading_orders{status}``: orders in the ops store by status
  (every status listed, zeros included), ``trading_risk_rejections_total{rule}``: pre-trade
  risk rejections recorded in the ops store, by rule.

Snapshot, orders and risk series are read from the shared stores at scrape time, so every
worker reports the same values. Request counters live in the worker that served the
request: with several uvicorn workers (``trading api --workers N``) set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the workers start (see
:func:`prepare_multiprocess_dir`); each worker then writes its samples there and any worker
answering ``/metrics`` aggregates all of them. Limits of that mode (prometheus-client's):
no ``_created`` series; WebSocket clients are counted by the middleware per worker
(``livesum``) rather than read from one hub; files of a worker that died without a clean
shutdown stay until the directory is wiped at the next start.

Auth: ``/metrics`` needs an API key like every route except ``/health`` (it reveals order
flow). Prometheus sends it with ``authorization: {credentials: <key>}`` (Bearer) in the
scrape config. ``TRADING_METRICS_PUBLIC=true`` opens it, for a scrape on a private network
only (e.g. the API bound to an internal interface behind a load balancer that does not
route ``/metrics``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trading_api.deps import authenticate
from trading_api.schemas import AUTH_RESPONSES
from trading_pipeline import logs

if TYPE_CHECKING:
    from trading_api.deps import AppState

log = logs.get_logger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PUBLIC_ENV = "TRADING_METRICS_PUBLIC"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "<unmatched>"


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess_dir(path: Path | str) -> str:
    """Empty ``path`` and export it as PROMETHEUS_MULTIPROC_DIR; call before uvicorn forks workers."""
    path = Path(path)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return str(path)


def _public() -> bool:
    return os.environ.get(PUBLIC_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class ApiMetrics:
    """The instruments of one app. Single-process: their own registry (several apps in one
    process, as in tests, never collide). Multiprocess: samples go to the shared directory."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.multiprocess = multiprocess_mode()
        self.registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "trading_api_requests", "HTTP requests served, by route template, method and status.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "trading_api_request_duration_seconds", "HTTP request latency (until the response is sent).",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.ws_open = (
            Gauge("trading_api_websocket_clients", "WebSocket connections open, summed over live workers.",
                  registry=None, multiprocess_mode="livesum")
            if self.multiprocess else None
        )
        if self.registry is not None:
            self.registry.register(StateCollector(state, websocket_from_hub=True))

    def scrape(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(StateCollector(self.state, websocket_from_hub=False))
        return generate_latest(registry)


class StateCollector(Collector):
    """Scrape-time gauges from the snapshot and the ops store (same in every worker)."""

    def __init__(self, state: AppState, websocket_from_hub: bool) -> None:
        self.state = state
        self.websocket_from_hub = websocket_from_hub

    def collect(self) -> Iterator[Any]:
        if self.websocket_from_hub:
            hub = self.state.hub
            yield GaugeMetricFamily("trading_api_websocket_clients", "WebSocket clients connected to the push hub.",
                                    value=len(hub.clients) if hub is not None else 0)
        yield from self._snapshot()
        yield from self._ops()

    def _snapshot(self) -> Iterator[Any]:
        status = self.state.reader.status()
        yield GaugeMetricFamily("trading_snapshot_up", "1 when the serving snapshot is readable.",
                                value=1 if status.get("ok") else 0)
        age = status.get("age_seconds")
        if age is not None:
            yield GaugeMetricFamily("trading_snapshot_age_seconds", "Seconds since the serving snapshot was published.",
                                    value=age)
        if status.get("ok"):
            yield GaugeMetricFamily("trading_snapshot_sequence", "Sequence number of the serving snapshot.",
                                    value=status.get("sequence") or 0)

    def _ops(self) -> Iterator[Any]:
        try:
            by_status, by_rule = ops_counts(self.state)
        except Exception as exc:  # store down: say so, keep the rest of the scrape
            log.warning("metrics_ops_store_unavailable", error=f"{type(exc).__name__}: {exc}")
            yield GaugeMetricFamily("trading_ops_store_up", "1 when the ops store answered.", value=0)
            return
        yield GaugeMetricFamily("trading_ops_store_up", "1 when the ops store answered.", value=1)
        orders = GaugeMetricFamily("trading_orders", "Orders in the ops store by status.", labels=["status"])
        for status, n in sorted(by_status.items()):
            orders.add_metric([status], n)
        yield orders
        rejections = CounterMetricFamily("trading_risk_rejections", "Pre-trade risk rejections recorded, by rule.",
                                         labels=["rule"])
        for rule, n in sorted(by_rule.items()):
            rejections.add_metric([rule], n)
        yield rejections


def ops_counts(state: AppState) -> tuple[dict[str, int], dict[str, int]]:
    """(orders by status with every status present, risk rejections by rule) from the ops store."""
    import sqlalchemy as sa

    from trading_pipeline.trading.model import OrderStatus
    from trading_pipeline.trading.store.schema import orders, risk_events

    store = state.store()
    with store.reading() as conn:
        statuses = dict(conn.execute(sa.select(orders.c.status, sa.func.count()).group_by(orders.c.status)).all())
        rules = dict(conn.execute(sa.select(risk_events.c.rule, sa.func.count()).group_by(risk_events.c.rule)).all())
    by_status = {s.value: 0 for s in OrderStatus}
    by_status.update({str(k): int(v) for k, v in statuses.items()})
    return by_status, {str(k): int(v) for k, v in rules.items()}


class MetricsMiddleware:
    """Pure ASGI middleware: count and time every HTTP request; track WebSocket connections
    per worker (multiprocess); on shutdown, retire this worker's live gauges."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if kind == "websocket":
            ws = self.metrics.ws_open
            if ws is not None:
                ws.inc()
            try:
                await self.app(scope, receive, send)
            finally:
                if ws is not None:
                    ws.dec()
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method, route, str(status["code"])).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)

    def _lifespan_send(self, send: Send) -> Send:
        async def wrapper(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete" and self.metrics.multiprocess:
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(os.getpid())
            await send(message)

        return wrapper


def install_metrics(app: FastAPI) -> ApiMetrics:
    """Count requests and serve /metrics on ``app`` (from ``create_app``); idempotent."""
    existing = getattr(app.state, "metrics", None)
    if isinstance(existing, ApiMetrics):
        return existing
    metrics = ApiMetrics(app.state.trading)
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(router)
    return metrics


def _metrics_auth(request: Request) -> None:
    # scope "read": any active key (every scope implies read); ``authenticate`` is that check
    if _public():
        return
    authenticate(request.app.state.trading, request.headers)


router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(_metrics_auth)],
    summary="Prometheus metrics (API key unless TRADING_METRICS_PUBLIC=true)",
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text exposition format."},
        **AUTH_RESPONSES,
    },
    # _metrics_auth checks the key by hand (it can be switched off), so declare what it accepts.
    openapi_extra={"security": [{"APIKeyHeader": []}, {"HTTPBearer": []}]},
)
async def metrics(request: Request) -> Response:
    m: ApiMetrics = request.app.state.metrics
    body = await run_in_threadpool(m.scrape)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
