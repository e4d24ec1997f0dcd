"""API key administration over the API (GET/POST /api-keys, DELETE /api-keys/{id}): against a real
uvicorn process, a real ops store and the real `trading api-key` CLI that shares its functions."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from tests.api.support import ApiEnv, Server
from trading_api import main
from trading_api.keys import create_key, list_keys
from trading_api.main import create_app
from trading_pipeline.trading.store import OpsStore

TRADING = str(Path(sys.executable).parent / "trading")  # the console script, a real binary
ORDER = {"symbol": "GOOG", "side": "buy", "quantity": "1"}


@pytest.fixture
def keys(api_env: ApiEnv) -> dict[str, str]:
    """One key per scope; api_env's own key ("tests") is a default key, i.e. ``trade``."""
    store = OpsStore(api_env.store_url)
    out = {"trade": api_env.key, "read": create_key(store, "watcher", "read")[1],
           "admin": create_key(store, "ops-lead", "admin")[1]}
    store.close()
    return out


def _h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def _stored(api_env: ApiEnv) -> list[tuple[int, str, str, bool]]:
    store = OpsStore(api_env.store_url)
    try:
        return [(k.id, k.name, k.scope, k.revoked_at is None) for k in list_keys(store, include_revoked=True)]
    finally:
        store.close()


def test_only_admin_keys_reach_the_key_routes(server: Server, keys: dict[str, str], api_env: ApiEnv) -> None:
    before = _stored(api_env)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for scope in ("read", "trade"):
            for r in (c.get("/api-keys", headers=_h(keys[scope])),
                      c.post("/api-keys", json={"name": "x", "scope": "admin"}, headers=_h(keys[scope])),
                      c.delete("/api-keys/1", headers=_h(keys[scope]))):
                assert r.status_code == 403, r.text
                detail = r.json()["detail"]
                assert detail["required_scope"] == "admin" and detail["key_scope"] == scope
                assert "--scope admin" in detail["message"]
        assert c.get("/api-keys").status_code == 401
        assert c.post("/api-keys", json={"name": "x", "scope": "admin"}, headers=_h("trd_" + "x" * 43)).status_code == 401
    assert _stored(api_env) == before  # nobody made or revoked anything


def test_create_list_use_and_revoke_on_a_real_server(server: Server, keys: dict[str, str], api_env: ApiEnv) -> None:
    admin = _h(keys["admin"])
    with httpx.Client(base_url=server.url, timeout=10) as c:
        listed = c.get("/api-keys", headers=admin)
        assert listed.status_code == 200, listed.text
        assert [(k["name"], k["scope"]) for k in listed.json()["keys"]] == [
            ("tests", "trade"), ("watcher", "read"), ("ops-lead", "admin")]
        assert listed.json()["keys"][2]["scopes"] == ["read", "trade", "admin"]
        assert not any(secret in listed.text for secret in keys.values()) and "sha256" not in listed.text
        assert all(set(k) == {"id", "name", "scope", "scopes", "created_at", "revoked_at"} for k in listed.json()["keys"])

        # create: the secret once, with its scope, usable at once
        r = c.post("/api-keys", json={"name": "  wall-screen  ", "scope": "read"}, headers=admin)
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["name"] == "wall-screen" and made["scope"] == "read" and made["revoked_at"] is None
        assert made["key"].startswith("trd_") and r.headers["cache-control"] == "no-store"
        screen = _h(made["key"])
        me = c.get("/me", headers=screen).json()
        assert me["id"] == made["id"] and me["scopes"] == ["read"]
        assert c.get("/signals", headers=screen).status_code == 200
        assert c.post("/orders", json=ORDER, headers=screen).status_code == 403  # read is read
        assert made["key"] not in c.get("/api-keys", headers=admin).text  # answered once, never again

        r = c.post("/api-keys", json={"name": "bot", "scope": "trade"}, headers=admin)
        assert r.status_code == 201, r.text
        bot = _h(r.json()["key"])
        assert c.post("/orders", json=ORDER, headers=bot).status_code == 201
        assert c.put("/kill-switch", json={"engaged": True, "reason": "x"}, headers=bot).status_code == 403

        # the CLI lists the same keys: one implementation, one store
        cli = subprocess.run([TRADING, "api-key", "list", "--json"], env=api_env.environ(), cwd=api_env.home,
                             capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr
        assert [(k["name"], k["scope"]) for k in json.loads(cli.stdout)][-2:] == [("wall-screen", "read"), ("bot", "trade")]

        # revoke: refused at once in this worker, kept in the list with revoked_at
        r = c.delete(f"/api-keys/{made['id']}", headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == made["id"] and r.json()["revoked_at"] is not None
        assert c.get("/me", headers=screen).status_code == 401
        assert made["id"] not in [k["id"] for k in c.get("/api-keys", headers=admin).json()["keys"]]
        everything = c.get("/api-keys", params={"include_revoked": "true"}, headers=admin).json()["keys"]
        assert next(k for k in everything if k["id"] == made["id"])["revoked_at"] == r.json()["revoked_at"]
        again = c.delete(f"/api-keys/{made['id']}", headers=admin)  # a retried DELETE: same answer, no change
        assert again.status_code == 200 and again.json()["revoked_at"] == r.json()["revoked_at"]
        missing = c.delete("/api-keys/9999", headers=admin)
        assert missing.status_code == 404 and "no API key 9999" in missing.json()["detail"]
        assert c.delete("/api-keys/one", headers=admin).status_code == 422
        assert c.get("/me", headers=bot).status_code == 200  # only the one key went

    log = server.log_path.read_text()
    assert "event=api_key_created" in log and "name=wall-screen" in log and "by=api:ops-lead" in log
    assert "event=api_key_revoked" in log and f"key_id={made['id']}" in log
    assert made["key"] not in log


def test_bad_bodies_are_422_with_a_message_and_store_nothing(server: Server, keys: dict[str, str], api_env: ApiEnv) -> None:
    admin = _h(keys["admin"])
    before = _stored(api_env)
    cases = [
        ({"name": "x", "scope": "superuser"}, "scope", "'read', 'trade' or 'admin'"),
        ({"name": "", "scope": "read"}, "name", "at least 1 character"),
        ({"name": "   ", "scope": "read"}, "name", "give the key a name"),
        ({"name": "a\nb", "scope": "read"}, "name", "printable"),
        ({"name": "x" * 129, "scope": "read"}, "name", "at most 128"),
        ({"name": "x"}, "scope", "Field required"),
        ({"name": "x", "scope": "read", "key": "trd_mine"}, "key", "Extra inputs"),
    ]
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for body, field, message in cases:
            r = c.post("/api-keys", json=body, headers=admin)
            assert r.status_code == 422, (body, r.text)
            err = r.json()["detail"][0]
            assert err["loc"] == ["body", field] and message in err["msg"], (body, err)
        r = c.post("/api-keys", content=b"{not json", headers={**admin, "Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    assert _stored(api_env) == before


def test_revoking_the_calling_key_needs_force(server: Server, keys: dict[str, str], api_env: ApiEnv) -> None:
    admin = _h(keys["admin"])
    with httpx.Client(base_url=server.url, timeout=10) as c:
        own = c.get("/me", headers=admin).json()["id"]
        r = c.delete(f"/api-keys/{own}", headers=admin)
        assert r.status_code == 409, r.text
        assert "is the key making this request" in r.json()["detail"] and "?force=true" in r.json()["detail"]
        assert (own, "ops-lead", "admin", True) in _stored(api_env)  # still active
        assert c.get("/api-keys", headers=admin).status_code == 200
        r = c.delete(f"/api-keys/{own}", params={"force": "true"}, headers=admin)
        assert r.status_code == 200 and r.json()["revoked_at"] is not None
        assert c.get("/api-keys", headers=admin).status_code == 401
    assert (own, "ops-lead", "admin", False) in _stored(api_env)


def test_openapi_documents_the_key_routes(api_env: ApiEnv) -> None:
    spec = create_app(api_env.settings).openapi()
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    assert {"200", "401", "403", "422"} <= set(paths["/api-keys"]["get"]["responses"])
    assert {"201", "400", "401", "403", "422"} <= set(paths["/api-keys"]["post"]["responses"])
    assert {"200", "401", "403", "404", "409", "422"} <= set(paths["/api-keys/{key_id}"]["delete"]["responses"])
    assert schemas["ApiKeyCreate"]["properties"]["scope"]["enum"] == ["read", "trade", "admin"]
    assert "key" in schemas["ApiKeyCreated"]["properties"] and "key" not in schemas["ApiKeyInfo"]["properties"]


# ---- schemathesis with an admin key: the 2xx answers are checked too -------------------------
class CurrentApp:
    """ASGI app that forwards to the app of the running test."""

    app: FastAPI | None = None

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        await self.app(scope, receive, send)


CURRENT = CurrentApp()
SCHEMA = schemathesis.openapi.from_dict(
    copy.deepcopy(main.app.openapi()),
    config=schemathesis.Config.from_dict({
        "seed": 20261129,
        "generation": {"mode": "all", "max-examples": 15, "deterministic": True},
        "checks": {"positive_data_acceptance": {"enabled": False}},
    }),
).include(path_regex="^/api-keys")
SCHEMA.app = CURRENT


@pytest.fixture
def admin_app(api_env: ApiEnv, keys: dict[str, str]):  # noqa: ANN201
    CURRENT.app = create_app(api_env.settings, poll_interval=1.0, heartbeat=30.0)
    yield keys["admin"]
    CURRENT.app = None


@SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_key_routes_answer_what_they_document(case: schemathesis.Case, admin_app: str) -> None:
    case.call_and_validate(headers=_h(admin_app))
