"""GET/POST /api-keys and DELETE /api-keys/{key_id}: the `trading api-key` commands over the API.

An operator who runs the API on another machine than the ops store's shell (a container, a
managed host) could otherwise only mint or revoke keys by logging in there. Every route needs
``admin``: a list of key names tells who uses the API, and a new key can carry any scope.

The work is trading_api/keys.py's ``create_key``/``list_keys``/``revoke_key``, the functions the
CLI calls, so a key made here and one made with `trading api-key create` are the same thing.
The secret is answered once (201, ``Cache-Control: no-store``) and never stored or listed; only
its hash is. The ops store has no audit columns for keys, so each change is logged as one event
with ``by=api:<key name>``, the name the kill switch records as ``updated_by``.

Revoking the calling key itself would lock the caller out mid-session: refused with 409 unless
``?force=true``. A revoked key stops working at once in the worker that revoked it (its cached
check is dropped) and within the key checker's 5 s cache in the others.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from trading_api.deps import AppState, State, Store, require_scope
from trading_api.keys import ApiKey, create_key, list_keys, revoke_key
from trading_api.schemas import FORBIDDEN, READ_RESPONSES, ErrorDetail, UtcDateTime
from trading_pipeline import logs

router = APIRouter(tags=["auth"], responses={**READ_RESPONSES, **FORBIDDEN})
log = logs.get_logger(__name__)

ScopeName = Literal["read", "trade", "admin"]


class ApiKeyInfo(BaseModel):
    """One API key as `trading api-key list` shows it: never the key or its hash."""

    id: int
    name: str
    scope: ScopeName = Field(description="The key's scope; each implies the ones before it.")
    scopes: list[ScopeName] = Field(description="Every scope the key has, weakest first.")
    created_at: UtcDateTime
    revoked_at: UtcDateTime | None = Field(default=None, description="When it was revoked; null while active.")


class ApiKeyList(BaseModel):
    keys: list[ApiKeyInfo] = Field(description="By id, oldest first.")


class ApiKeyCreated(ApiKeyInfo):
    key: str = Field(description="The API key itself. Shown only in this answer (only its hash is stored): keep it now.")


class ApiKeyCreate(BaseModel):
    """A new key: who or what it is for, and its scope (named on purpose: no default here)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="Who or what the key is for, e.g. `dashboard`.",
                      examples=["dashboard"])
    scope: ScopeName = Field(description="read: GET routes and the live feed. trade: also orders. admin: also the "
                             "kill switch and these key routes.")

    @field_validator("name")
    @classmethod
    def _printable(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("give the key a name (who or what it is for, e.g. dashboard)")
        if any(unicodedata.category(c) == "Cc" for c in v):
            raise ValueError("the key name must be printable text (no control characters such as newlines)")
        return v.strip()


def _info(k: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(id=k.id, name=k.name, scope=k.scope, scopes=k.scopes, created_at=k.created_at,
                      revoked_at=k.revoked_at)


def _forget(state: AppState, key_id: int) -> None:
    """Drop this worker's cached checks of ``key_id``, so the revoked key is refused from the next
    request on rather than when the cache entry expires."""
    if state._checker is not None:
        state._checker.forget(key_id)


@router.get(
    "/api-keys",
    response_model=ApiKeyList,
    dependencies=[Depends(require_scope("admin"))],
    summary="API keys by id, name and scope, never the key itself (admin keys)",
)
def get_api_keys(
    store: Store,
    include_revoked: Annotated[bool, Query(description="Also list revoked keys (`trading api-key list --all`).")] = False,
) -> ApiKeyList:
    return ApiKeyList(keys=[_info(k) for k in list_keys(store, include_revoked=include_revoked)])


@router.post(
    "/api-keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses={400: {"model": ErrorDetail, "description": "The body could not be read as text (e.g. not UTF-8)."}},
    summary="Create an API key and answer it once (admin keys)",
    description="`{\"name\": \"dashboard\", \"scope\": \"read\"}`. The answer's `key` is the only time the key is "
    "shown: only its hash is stored. An unknown scope or a blank name is a 422 that says what to send.",
)
def post_api_key(
    record: Annotated[dict, Depends(require_scope("admin"))], store: Store, body: ApiKeyCreate, response: Response
) -> ApiKeyCreated:
    try:
        created, key = create_key(store, body.name, body.scope)
    except ValueError as exc:  # create_key's own rules (the body model checks the same first)
        raise HTTPException(422, str(exc)) from exc
    response.headers["Cache-Control"] = "no-store"
    log.warning("api_key_created", key_id=created.id, name=created.name, scope=created.scope,
                by=f"api:{record['name']}", by_key_id=record["id"])
    return ApiKeyCreated(**_info(created).model_dump(), key=key)


@router.delete(
    "/api-keys/{key_id}",
    response_model=ApiKeyInfo,
    responses={
        404: {"model": ErrorDetail, "description": "No key with this id."},
        409: {"model": ErrorDetail, "description": "This is the key making the request: revoking it would lock the "
              "caller out. Use another admin key, or add `?force=true`."},
    },
    summary="Revoke an API key (admin keys)",
    description="The key stops working at once in this API worker and within 5 s in the others. Revoking a key "
    "already revoked answers it unchanged (a retried DELETE is harmless).",
)
def delete_api_key(
    record: Annotated[dict, Depends(require_scope("admin"))],
    state: State,
    store: Store,
    key_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="The key's id (`GET /api-keys`).")],
    force: Annotated[bool, Query(description="Allow revoking the key this request carries.")] = False,
) -> ApiKeyInfo:
    if key_id == record["id"] and not force:
        raise HTTPException(409, f"key {key_id} ({record['name']}) is the key making this request: revoking it "
                            "locks this client out. Revoke it with another admin key, or add ?force=true")
    revoked = revoke_key(store, key_id)
    found = next((k for k in list_keys(store, include_revoked=True) if k.id == key_id), None)
    if found is None:
        raise HTTPException(404, f"no API key {key_id}: see GET /api-keys?include_revoked=true")
    if revoked:
        log.warning("api_key_revoked", key_id=key_id, name=found.name, scope=found.scope,
                    by=f"api:{record['name']}", by_key_id=record["id"])
    _forget(state, key_id)
    return _info(found)
