"""Dependencies: settings, the snapshot reader, the ops store, the broker, API-key auth and
the scope each route needs (``require_scope``: ``read`` < ``trade`` < ``admin``)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from trading_api.keys import SCOPES, KeyChecker, extract_key, grants
from trading_api.snapshot import SnapshotBarFeed, SnapshotReader
from trading_pipeline.settings import Settings

if TYPE_CHECKING:
    from trading_api.ws import Hub
    from trading_pipeline.trading.store import OpsStore

log = logging.getLogger(__name__)


class OpsStoreUnavailable(RuntimeError):
    pass


@dataclass
class AppState:
    """Everything the routes share, built once per app by ``create_app``."""

    settings: Settings
    reader: SnapshotReader
    hub: Hub | None = None
    _store: OpsStore | None = None
    _checker: KeyChecker | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def store(self) -> OpsStore:
        """The ops store, opened (and migrated) on first use; retried after a failure."""
        if self._store is not None:
            return self._store
        with self._lock:
            if self._store is None:
                from trading_pipeline.trading.store import OpsStore

                try:
                    self._store = OpsStore.from_settings(self.settings)
                except Exception as exc:  # any driver error: report, retry on the next request
                    raise OpsStoreUnavailable(f"ops store unavailable: {type(exc).__name__}: {exc}") from exc
            return self._store

    def known_key(self, headers: Any) -> dict[str, Any] | None:
        """The record of the request's key if it was checked active within the TTL, without
        touching the store (None: not known yet, ask :func:`authenticate` in a thread)."""
        if self._checker is None:
            return None
        key = extract_key(headers)
        return self._checker.cached(key) if key else None

    def checker(self) -> KeyChecker:
        if self._checker is None:
            self._checker = KeyChecker(self.store())
        return self._checker

    def feed(self) -> SnapshotBarFeed:
        return SnapshotBarFeed(self.reader, "1d")

    def broker(self, account: str) -> Any:
        """The broker TRADING_BROKER names; paper fills against the snapshot's bars."""
        from trading_pipeline.trading.services import make_broker

        return make_broker(self.settings, self.store(), account, feed=self.feed())

    def close(self) -> None:
        self.reader.close()
        if self._store is not None:
            self._store.close()


# Dependencies that never block are ``async def``: FastAPI runs a plain ``def`` dependency in
# the thread pool, a hand-off that costs more than these bodies.
async def get_state(request: Request) -> AppState:
    return request.app.state.trading


async def get_settings_dep(state: Annotated[AppState, Depends(get_state)]) -> Settings:
    return state.settings


async def get_reader(state: Annotated[AppState, Depends(get_state)]) -> SnapshotReader:
    return state.reader


def get_store(state: Annotated[AppState, Depends(get_state)]) -> OpsStore:
    return state.store()


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key from `trading api-key create NAME`.")
_bearer = HTTPBearer(auto_error=False, description="The same API key as a bearer token.")


def authenticate(state: AppState, headers: Any) -> dict[str, Any]:
    """The active key's record for these request headers, else 401 (blocking: may read the store)."""
    key = extract_key(headers)
    record = state.checker().check(key) if key else None
    if record is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing API key" if not key else "invalid or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return record


async def require_api_key(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    _h: Annotated[str | None, Depends(_api_key_header)] = None,
    _b: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> dict[str, Any]:
    """401 unless the request carries an active API key (X-API-Key or Authorization: Bearer).

    A key checked within the checker's TTL is answered from memory on the event loop; any
    other check reads the ops store in a worker thread."""
    record = state.known_key(request.headers)
    if record is None:
        record = await run_in_threadpool(authenticate, state, request.headers)
    request.state.api_key_id = record["id"]
    return record


def require_scope(needed: str) -> Any:
    """A dependency: 401 without an active key, 403 when its scope does not grant ``needed``.

    Every router declares one (``dependencies=[Depends(require_scope("read"))]``), so a route
    without a scope is visible in review; the key check itself is :func:`require_api_key`'s
    and FastAPI runs it once per request however many dependencies ask for it."""
    if needed not in SCOPES:
        raise ValueError(f"unknown scope {needed!r}: use one of {', '.join(SCOPES)}")

    async def scope_check(record: Annotated[dict, Depends(require_api_key)]) -> dict[str, Any]:
        if not grants(record.get("scope"), needed):
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail={
                    "error": "insufficient_scope",
                    "required_scope": needed,
                    "key_scope": record.get("scope"),
                    "message": f"this API key ({record.get('name')}) has scope {record.get('scope')!r}; "
                    f"this route needs {needed!r}: create one with `trading api-key create NAME --scope {needed}`",
                },
            )
        return record

    scope_check.__name__ = f"require_{needed}_scope"
    return scope_check


State = Annotated[AppState, Depends(get_state)]
Reader = Annotated[SnapshotReader, Depends(get_reader)]
Store = Annotated[Any, Depends(get_store)]
ApiKeyRecord = Annotated[dict, Depends(require_api_key)]
