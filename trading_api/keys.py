"""API keys: created once (printed once), stored as a hash in the ops store's ``api_keys``.

A key is ``trd_`` + 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits). Only
``sha256:<hex>`` of it is stored. A per-key salt protects low-entropy secrets (passwords)
against precomputed tables; a 256-bit random token cannot be guessed or tabled, and an
unsalted digest lets the store find the key by an indexed equality lookup
(``OpsStore.find_api_key``), which is what every request does.

Checking a key costs one indexed read; positive answers are cached for ``ttl`` seconds, so
a revoked key stops working within that time in every API worker.

Each key has one scope, and the scopes nest: ``admin`` (the kill switch; any key routes to come)
implies ``trade`` (place, modify, cancel orders) implies ``read`` (every GET, the WebSocket).
One ordered level per key, not a set of permissions, because every real key is one of three
roles (a dashboard that watches, a trader, an operator) and a level cannot be half-granted.
Keys created before scopes existed could do everything the API then offered, which is
``trade``; migration ``0009_api_key_scopes`` gives them that.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from trading_pipeline.trading.orders import utcnow
from trading_pipeline.trading.store import OpsStore
from trading_pipeline.trading.store.schema import api_keys

PREFIX = "trd_"

SCOPES: tuple[str, ...] = ("read", "trade", "admin")  # each implies the ones before it
DEFAULT_SCOPE = "trade"  # what every key could do before scopes: existing callers keep working


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None = None
    scope: str = DEFAULT_SCOPE

    @property
    def scopes(self) -> list[str]:
        return implied_scopes(self.scope)


def check_scope(scope: str) -> str:
    """``scope`` if it is one of :data:`SCOPES`, else a ValueError that lists them."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
    return scope


def implied_scopes(scope: str) -> list[str]:
    """Every scope ``scope`` grants, weakest first (``trade`` -> ``[read, trade]``); none for
    an unknown scope, so a mangled row grants nothing."""
    return list(SCOPES[: SCOPES.index(scope) + 1]) if scope in SCOPES else []


def grants(scope: str | None, needed: str) -> bool:
    """Whether a key of ``scope`` may do what needs ``needed``."""
    return needed in implied_scopes(scope or "")


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def create_key(store: OpsStore, name: str, scope: str = DEFAULT_SCOPE) -> tuple[ApiKey, str]:
    """Store a new key for ``name`` with ``scope``; returns it with the plaintext (shown once,
    never stored). One insert names the scope, so no key ever exists with another one."""
    name = name.strip()
    if not name or len(name) > 128:
        raise ValueError("key name must be 1-128 characters")
    check_scope(scope)
    key = new_key()
    with store.transaction() as conn:
        res = conn.execute(api_keys.insert().values(name=name, key_hash=hash_key(key), scope=scope, created_at=utcnow()))
        key_id = int(res.inserted_primary_key[0])
    return next(k for k in list_keys(store, include_revoked=True) if k.id == key_id), key


def list_keys(store: OpsStore, include_revoked: bool = False) -> list[ApiKey]:
    q = sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked_at, api_keys.c.scope)
    if not include_revoked:
        q = q.where(api_keys.c.revoked_at.is_(None))
    with store.reading() as conn:
        return [ApiKey(**dict(r._mapping)) for r in conn.execute(q.order_by(api_keys.c.id))]


def revoke_key(store: OpsStore, key_id: int) -> bool:
    return store.revoke_api_key(key_id)


class KeyChecker:
    """Looks keys up in the ops store, with a short positive cache."""

    def __init__(self, store: OpsStore, ttl: float = 5.0) -> None:
        self.store = store
        self.ttl = ttl
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def cached(self, key: str | None) -> dict[str, Any] | None:
        """The record if ``key`` was found active within the TTL; None means "ask :meth:`check`"
        (never blocks on the store)."""
        if not key or not key.startswith(PREFIX) or len(key) > 200:
            return None
        hit = self._cache.get(hash_key(key))
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        return None

    def check(self, key: str | None) -> dict[str, Any] | None:
        """The key's record (id, name, scope) when ``key`` is active, else None."""
        record = self.cached(key)
        if record is not None or not key or not key.startswith(PREFIX) or len(key) > 200:
            return record
        digest = hash_key(key)
        now = time.monotonic()
        row = self.store.find_api_key(digest)
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            with self._lock:
                self._cache.pop(digest, None)
            return None
        scope = row.get("scope") or DEFAULT_SCOPE
        if scope not in SCOPES:  # a hand-edited row: grant nothing rather than guess
            return None
        record = {"id": row["id"], "name": row["name"], "scope": scope}
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, record)
        return record

    def forget(self, key_id: int) -> None:
        """Drop the cached checks of key ``key_id`` (revoked: refused from the next request on,
        not when its cache entry expires)."""
        with self._lock:
            for digest in [d for d, (_, rec) in self._cache.items() if rec.get("id") == key_id]:
                self._cache.pop(digest, None)


def extract_key(headers: Any, query: Any | None = None) -> str | None:
    """The API key a request carries: ``X-API-Key``, ``Authorization: Bearer``, or (WebSocket
    clients, the dashboard's first load) the ``api_key`` query parameter."""
    key = headers.get("x-api-key")
    if not key:
        auth = headers.get("authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token:
            key = token.strip()
    if not key and query is not None:
        key = query.get("api_key")
    return key or None
