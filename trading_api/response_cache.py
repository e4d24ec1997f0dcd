"""Serve repeated snapshot reads without re-running FastAPI's request parsing.

Snapshot routes (signals, alerts, scans, market data) are pure functions of the snapshot
generation and their validated query parameters, and :func:`~trading_api.routers._query.snapshot_json`
caches their encoded bodies per generation. What remains per request is FastAPI's work
before the route runs: parsing and validating every query parameter and solving the
dependency graph, ~0.15 ms of a ~0.2 ms request.

:class:`ResponseCache` is a pure ASGI middleware that remembers, for each exact
``(path, query string)`` a snapshot route has answered, the cache key that route used. A
repeat of the same request line, with an API key the key checker has confirmed within its
TTL, is answered from the snapshot reader's cache directly, with the same body and headers
(and ``304`` for a matching ``If-None-Match``). Everything else goes through FastAPI: a
first request, a new snapshot (the reader's cache is per generation, so the entry is gone
and the route recomputes), an unknown or unconfirmed key (FastAPI answers 401), any method
but GET. Access log, request id, metrics and CORS stay outside it, so they see every
request alike; the metrics route label is the route template FastAPI matched the first time.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from trading_api.deps import AppState

SCOPE_KEY = "snapshot_cache_key"  # set in scope["state"] by snapshot_json for the middleware


class ResponseCache:
    def __init__(self, app: ASGIApp, state: AppState, max_entries: int = 4096) -> None:
        self.app = app
        self.state = state
        self.max_entries = max_entries
        self._routes: OrderedDict[tuple[str, bytes], tuple[tuple, Any]] = OrderedDict()
        self.hits = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        line = (scope["path"], scope["query_string"])
        known = self._routes.get(line)
        if known is not None and await self._answer(scope, send, *known):
            return
        await self.app(scope, receive, send)
        key = scope.get("state", {}).get(SCOPE_KEY)
        if key is not None:
            self._routes[line] = (key, scope.get("route"))
            self._routes.move_to_end(line)
            while len(self._routes) > self.max_entries:
                self._routes.popitem(last=False)

    async def _answer(self, scope: Scope, send: Send, key: tuple, route: Any) -> bool:
        headers = Headers(scope=scope)
        record = self.state.known_key(headers)
        if record is None:
            return False
        hit = self.state.reader.peek(key)
        if hit is None:
            return False
        self.hits += 1
        scope.setdefault("state", {})["api_key_id"] = record["id"]
        if route is not None:
            scope["route"] = route
        head = [(k.lower().encode(), v.encode()) for k, v in hit.validators.items()]
        if etag_matches(hit.etag, headers.get("if-none-match")):
            await send({"type": "http.response.start", "status": 304, "headers": head})
            await send({"type": "http.response.body", "body": b""})
            return True
        head += [(b"content-length", str(len(hit.body)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": hit.body})
        return True


def etag_matches(etag: str, if_none_match: str | None) -> bool:
    """Whether a request's ``If-None-Match`` names ``etag`` (answer 304)."""
    return bool(if_none_match) and etag in (t.strip() for t in if_none_match.split(","))
