"""API keys: created once (printed once), stored as a hash in the ops store's ``api_keys``.

A key is ``trd_`` + 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits). Only
``sha256:<hex>`` of it is stored. A per-key salt protects low-entropy secrets (passwords)
against precomputed tables; a 256-bit random token cannot be guessed or tabled, and an
unsalted digest lets the store find the key by an indexed equality lookup
(``OpsStore.find_api_key``), which is what every request does.

Checking a key costs one indexed read; positive answers are cached for ``ttl`` seconds, so
a revoked key stops working within that time in every API worker.
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

from trading_pipeline.trading.store import OpsStore

PREFIX = "trd_"


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def create_key(store: OpsStore, name: str) -> tuple[ApiKey, str]:
    """Store a new key for ``name``; returns it with the plaintext (shown once, never stored)."""
    name = name.strip()
    if not name or len(name) > 128:
        raise ValueError("key name must be 1-128 characters")
    key = new_key()
    key_id = store.create_api_key(name, hash_key(key))
    row = next(r for r in store.list_api_keys(include_revoked=True) if r["id"] == key_id)
    return ApiKey(row["id"], row["name"], row["created_at"], row["revoked_at"]), key


def list_keys(store: OpsStore, include_revoked: bool = False) -> list[ApiKey]:
    return [
        ApiKey(r["id"], r["name"], r["created_at"], r["revoked_at"])
        for r in store.list_api_keys(include_revoked=include_revoked)
    ]


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
        """The key's record (id, name) when ``key`` is active, else None."""
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
        record = {"id": row["id"], "name": row["name"]}
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, record)
        return record


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
