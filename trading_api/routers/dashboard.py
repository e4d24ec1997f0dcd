"""The web dashboard: one HTML page, its static JS/CSS, and Plotly from the installed wheel.

``GET /`` is behind the same API key as the REST routes. A browser cannot send a header on
first load, so ``/`` also accepts ``?api_key=``; the page's script keeps the key in
sessionStorage, strips it from the address bar, and sends it as ``X-API-Key`` on every fetch
and as ``?api_key=`` on the WebSocket. A missing or bad key gets a small 401 page that says
how to get one. The static assets hold no data and are open. ``GET /dashboard/status``
always answers 200 (with the snapshot's state) so the page can show "no snapshot yet"
without provoking 503s that the browser would log as console errors.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import importlib.metadata
import importlib.resources
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel

from trading_api.deps import ApiKeyRecord, State, require_scope
from trading_api.keys import extract_key
from trading_api.response_cache import etag_matches
from trading_api.schemas import READ_RESPONSES, SnapshotStatus

router = APIRouter(tags=["dashboard"])

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Own assets served from STATIC_DIR (an allow-list: nothing else in the folder is reachable).
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard-orders.js": "text/javascript; charset=utf-8",
    "dashboard-rebalance.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard-auth.js": "text/javascript; charset=utf-8",
    "dashboard-admin.js": "text/javascript; charset=utf-8",
}

# Everything the page loads comes from this origin; Plotly injects <style> elements and
# draws some icons as data: URIs, hence 'unsafe-inline' styles and data: images.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the first URL carries ?api_key=
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}

UNAUTHORIZED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Trading dashboard: API key needed</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/dashboard.css">
<script src="/static/dashboard-auth.js" defer></script></head>
<body class="unauthorized"><main class="card">
<h1>API key needed</h1>
<p id="auth-reason">{reason}</p>
<p>Create a key on the machine that runs the pipeline:</p>
<pre>trading api-key create dashboard</pre>
<p>then open <code>/?api_key=THE_KEY</code> on this server. The page keeps the key for this
browser tab only and removes it from the address bar.</p>
</main></body></html>
"""


@lru_cache(maxsize=1)
def plotly_js() -> Path:
    """plotly.min.js shipped in the plotly wheel (``plotly/package_data``)."""
    res = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
    path = Path(str(res))
    if not path.is_file():  # a zipped install: not supported, say so plainly
        raise RuntimeError(f"plotly.min.js not found at {res}; reinstall plotly")
    return path


@lru_cache(maxsize=1)
def plotly_version() -> str:
    try:
        return importlib.metadata.version("plotly")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def _etag(path: Path) -> str:
    st = path.stat()
    return (
        '"' + hashlib.sha1(f"{path}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()[:20] + '"'
    )


@lru_cache(maxsize=16)
def _gzipped(path: Path, etag: str) -> bytes:
    """The file gzip-compressed, once per version (``etag``): plotly.min.js is 4.8 MB raw,
    ~1.4 MB gzipped."""
    return gzip.compress(path.read_bytes(), compresslevel=6, mtime=0)


def static_file(request: Request, path: Path, media_type: str, cache_control: str) -> Response:
    """The file with an ETag (304 when the browser already has it), gzip-encoded for clients
    that accept it (each encoding its own ETag, ``Vary: Accept-Encoding``)."""
    etag = _etag(path)
    gz = "gzip" in request.headers.get("accept-encoding", "").lower()
    if gz:
        etag = etag[:-1] + '-gz"'
    headers = {"Cache-Control": cache_control, "ETag": etag, "X-Content-Type-Options": "nosniff",
               "Vary": "Accept-Encoding"}
    if etag_matches(etag, request.headers.get("if-none-match")):
        return Response(status_code=304, headers=headers)
    if gz:
        return Response(_gzipped(path, etag), media_type=media_type, headers={**headers, "Content-Encoding": "gzip"})
    return FileResponse(path, media_type=media_type, headers=headers)


def _page() -> str:
    text = (STATIC_DIR / "dashboard.html").read_text(encoding="utf-8")
    # Cache-busting for our own assets and Plotly: the version changes when the files do.
    stamp = hashlib.sha1(
        b"".join(str(_etag(STATIC_DIR / n)).encode() for n in sorted(ASSETS))
    ).hexdigest()[:12]
    return text.replace("{{ASSET_VERSION}}", stamp).replace(
        "{{PLOTLY_VERSION}}", html.escape(plotly_version())
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard(request: Request, state: State) -> HTMLResponse:
    """The dashboard page; needs an API key (header, bearer or ``?api_key=``) of any scope
    (``read`` at least: every active key has it). The page asks GET /me what to show."""
    key = extract_key(request.headers, request.query_params)
    record = await run_in_threadpool(state.checker().check, key) if key else None
    if record is None:
        reason = (
            "No API key was given."
            if not key
            else "That API key is not valid (unknown or revoked)."
        )
        return HTMLResponse(
            UNAUTHORIZED_PAGE.format(reason=html.escape(reason)),
            status_code=401,
            headers={**PAGE_HEADERS, "WWW-Authenticate": "Bearer"},
        )
    request.state.api_key_id = record["id"]
    return HTMLResponse(await run_in_threadpool(_page), headers=PAGE_HEADERS)


class DashboardStatus(BaseModel):
    snapshot: SnapshotStatus
    websocket_clients: int = 0


@router.get(
    "/dashboard/status",
    response_model=DashboardStatus,
    responses=READ_RESPONSES,
    dependencies=[Depends(require_scope("read"))],
    summary="Snapshot state for the dashboard (200 whatever the snapshot's state)",
)
async def dashboard_status(_key: ApiKeyRecord, state: State) -> DashboardStatus:
    """``/health``'s snapshot part, but 200 even when no snapshot is published yet."""
    snap: dict[str, Any] = await run_in_threadpool(state.reader.status)
    return DashboardStatus(
        snapshot=SnapshotStatus(**snap),
        websocket_clients=len(state.hub.clients) if state.hub else 0,
    )


@router.get("/static/plotly.min.js", include_in_schema=False)
def plotly_asset(request: Request) -> Response:
    # Referenced as /static/plotly.min.js?v=<plotly version>: safe to cache for a day.
    return static_file(request, plotly_js(), "text/javascript; charset=utf-8", "public, max-age=86400")


@router.get("/static/{name}", include_in_schema=False)
def static_asset(request: Request, name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        return Response("not found\n", status_code=404, media_type="text/plain")
    # Revalidated on every load (cheap 304): a new version shows up without a hard reload.
    return static_file(request, STATIC_DIR / name, media_type, "no-cache")
