"""Per-key rate limit: a token bucket per API key, in memory, in each API worker.

``TRADING_API_RATE_LIMIT`` requests per minute per key (0: no limit). A key's bucket holds
up to one minute's allowance and refills continuously, so a client may burst that many
requests and then gets one every ``60 / limit`` seconds; past that it gets ``429`` with
``Retry-After`` (whole seconds until a token is back) and the same JSON error shape as every
other error.

Why in memory, per worker, and not shared through the ops store: the limit protects the
server and the broker behind it from a runaway script, it is not billing. A shared counter
would be a write transaction on every request, and with the default SQLite store every API
worker and Dagster run would queue on that one write lock (docs/decisions.md #1, #2). So with
``trading api --workers N`` a key can get up to N times the limit, as the kernel spreads its
connections over the workers: set ``TRADING_API_RATE_LIMIT`` to the total divided by N.

A pure ASGI middleware outside the response cache (``response_cache.py`` answers repeated GETs
before any route dependency runs), so cached answers count too. It limits by the key a
request carries (hashed, never kept in clear), whether or not the key turns out valid:
requests without a key (``/health``, the docs, the dashboard's static files) are not limited.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict

from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from trading_api.keys import extract_key


class TokenBuckets:
    """One bucket per key digest: ``per_minute`` tokens, refilled at ``per_minute / 60`` a second.

    At most ``max_keys`` buckets are kept (least recently used dropped first: a dropped key
    just starts again with a full bucket), so a flood of made-up keys cannot grow memory."""

    def __init__(self, per_minute: int, max_keys: int = 10_000, clock=time.monotonic) -> None:
        if per_minute < 0:
            raise ValueError("TRADING_API_RATE_LIMIT must be 0 (off) or a positive number of requests per minute")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # digest -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, who: str) -> float:
        """Spend one token for ``who``: 0.0 when allowed, else the seconds until one is back."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(who, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[who] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait


class RateLimit:
    """ASGI middleware: ``429`` + ``Retry-After`` once a key has spent its bucket."""

    def __init__(self, app: ASGIApp, per_minute: int) -> None:
        self.app = app
        self.buckets = TokenBuckets(per_minute) if per_minute else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.buckets is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        query = QueryParams(scope.get("query_string", b"")) if scope["type"] == "websocket" or scope.get("path") == "/" else None
        key = extract_key(Headers(scope=scope), query)
        if not key:
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(hashlib.sha256(key.encode()).hexdigest())
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry_after = str(max(1, math.ceil(wait)))
        if scope["type"] == "websocket":  # refuse the handshake: HTTP 403 to the client, code 1008 in logs
            await send({"type": "websocket.close", "code": 1008, "reason": f"rate limit: retry after {retry_after} s"})
            return
        limit = int(self.buckets.capacity)
        body = json.dumps(
            {
                "detail": f"rate limit of {limit} requests per minute for this API key reached; retry after "
                f"{retry_after} s (TRADING_API_RATE_LIMIT sets the limit)",
                "request_id": scope.get("state", {}).get("request_id"),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", retry_after.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
