"""GET /docs and /redoc: Swagger UI and ReDoc served from this process, never from a CDN.

FastAPI's built-in pages load their JavaScript and CSS from a CDN, which leaves them blank on
a machine without internet. The assets ship in the ``fastapi-offline`` wheel; this router
serves them (gzip, ETag, cached for a day) and points the pages at them. The pages and the
schema are open like ``/health``: they describe the API and hold no data.
"""

from __future__ import annotations

import importlib.resources
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response

from trading_api.routers.dashboard import static_file

PREFIX = "/docs-assets"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}


@lru_cache(maxsize=1)
def assets_dir() -> Path:
    d = Path(str(importlib.resources.files("fastapi_offline") / "static"))
    missing = [n for n in ASSETS if not (d / n).is_file()]
    if missing:
        raise RuntimeError(f"API docs assets {missing} not found in {d}; reinstall fastapi-offline")
    return d


def docs_router(app: FastAPI) -> APIRouter:
    """The docs pages for ``app`` (created with ``docs_url=None, redoc_url=None``)."""
    router = APIRouter(include_in_schema=False)
    title = app.title

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{title} - Swagger UI",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js", swagger_css_url=f"{PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/favicon.png",
        )

    @router.get("/docs/oauth2-redirect")
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url, title=f"{title} - ReDoc",
            redoc_js_url=f"{PREFIX}/redoc.standalone.js", redoc_favicon_url=f"{PREFIX}/favicon.png",
            with_google_fonts=False,
        )

    @router.get(PREFIX + "/{name}")
    def docs_asset(request: Request, name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, f"no docs asset {name!r}")
        return static_file(request, assets_dir() / name, ASSETS[name], "public, max-age=86400")

    return router
