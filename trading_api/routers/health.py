"""GET /health: open (no key), for load balancers and `trading status`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from trading_api.deps import OpsStoreUnavailable, State
from trading_api.schemas import Health, OpsStoreStatus, SnapshotStatus

router = APIRouter(tags=["health"])


def _ops_status(state: State) -> OpsStoreStatus:
    try:
        return OpsStoreStatus(ok=True, schema_version=state.store().schema_version())
    except OpsStoreUnavailable as exc:
        return OpsStoreStatus(ok=False, reason=str(exc))
    except Exception as exc:  # a store that opened once and then went away
        return OpsStoreStatus(ok=False, reason=f"{type(exc).__name__}: {exc}")


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Snapshot or ops store unavailable."}},
    summary="Service health: snapshot age and ops store reachability",
)
async def health(state: State) -> JSONResponse | Health:
    snap = SnapshotStatus(**await run_in_threadpool(state.reader.status))
    ops = await run_in_threadpool(_ops_status, state)
    ok = snap.ok and ops.ok
    body = Health(
        status="ok" if ok else "degraded",
        snapshot=snap,
        ops_store=ops,
        websocket_clients=len(state.hub.clients) if state.hub else 0,
    )
    if ok:
        return body
    return JSONResponse(status_code=503, content=body.model_dump(mode="json"))
