"""API key scopes (read < trade < admin), the per-key rate limit and the kill switch from the
API (issue 19): against a real uvicorn process, a real ops store and the real `trading` CLI."""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import websockets
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

import trading_api.routers
from tests.api.support import ApiEnv, Server
from trading_api.keys import KeyChecker, create_key, hash_key, list_keys
from trading_api.main import create_app
from trading_api.rate_limit import TokenBuckets
from trading_pipeline.settings import Settings
from trading_pipeline.trading.store import OpsStore, migrations
from trading_pipeline.trading.store.schema import _sqlite_engine

ORDER = {"symbol": "GOOG", "side": "buy", "quantity": "1"}
TRADING = str(Path(sys.executable).parent / "trading")  # the console script, a real binary


@pytest.fixture
def keys(api_env: ApiEnv) -> dict[str, str]:
    """One key per scope; api_env's own key ("tests") is a default key, i.e. ``trade``."""
    store = OpsStore(api_env.store_url)
    out = {"trade": api_env.key}
    out["read"] = create_key(store, "watcher", "read")[1]
    out["admin"] = create_key(store, "ops-lead", "admin")[1]
    store.close()
    return out


def _h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def _forbidden(r: httpx.Response, needed: str) -> None:
    assert r.status_code == 403, r.text
    detail = r.json()["detail"]
    assert detail["error"] == "insufficient_scope" and detail["required_scope"] == needed
    assert f"--scope {needed}" in detail["message"]  # says what to do


# ---- every route says what it needs ------------------------------------------------------------
OPEN = {"/health", "/", "/static/plotly.min.js", "/static/{name}", "/metrics"}  # no data, or their own check


def _scopes(deps: list) -> set[str]:
    """The scopes named by ``require_scope(...)`` dependencies anywhere under ``deps``."""
    names: set[str] = set()
    stack = list(deps)
    while stack:
        d = stack.pop()
        call = getattr(d, "call", None) or getattr(d, "dependency", None)
        name = getattr(call, "__name__", "")
        if name.startswith("require_") and name.endswith("_scope"):
            names.add(name.removeprefix("require_").removesuffix("_scope"))
        stack.extend(getattr(d, "dependencies", []) or [])
    return names


def _declared() -> dict[tuple[str, str], set[str]]:
    """(method, path) -> scopes, from every router module of the API as written."""
    out: dict[tuple[str, str], set[str]] = {}
    for info in pkgutil.iter_modules(trading_api.routers.__path__):
        router = getattr(importlib.import_module(f"trading_api.routers.{info.name}"), "router", None)
        if router is None:
            continue
        for r in router.routes:
            if isinstance(r, APIRoute) and r.path not in OPEN:
                for m in r.methods:
                    out[(m, r.path)] = _scopes(router.dependencies) | _scopes([r.dependant])
    return out


def test_every_route_declares_a_scope_and_writes_need_more_than_read(api_env: ApiEnv, keys: dict[str, str]) -> None:
    needs = _declared()
    assert len(needs) >= 20 and ("PUT", "/kill-switch") in needs and ("GET", "/me") in needs
    assert not [k for k, v in needs.items() if not v], "routes without a scope"
    order = ("read", "trade", "admin")
    strongest = {k: max(v, key=order.index) for k, v in needs.items()}
    for (method, path), scope in strongest.items():
        # the preview is a POST that sends nothing; the key list names who uses the API (admin)
        if (method == "GET" and path != "/api-keys") or path == "/rebalance/preview":
            assert scope == "read", (method, path)
        else:
            assert scope in ("trade", "admin"), (method, path)
    assert strongest[("PUT", "/kill-switch")] == "admin" and strongest[("POST", "/orders")] == "trade"
    assert strongest[("DELETE", "/orders/{client_order_id}")] == strongest[("PATCH", "/orders/{client_order_id}")] == "trade"
    # what the running app does matches: every write the schema lists is refused to a read key
    app = create_app(api_env.settings)
    spec = app.openapi()["paths"]
    assert "403" in spec["/orders"]["post"]["responses"] and "403" in spec["/kill-switch"]["put"]["responses"]
    assert "429" in spec["/signals"]["get"]["responses"]
    with TestClient(app) as c:
        for path, ops in spec.items():
            for method in ops:
                if method.upper() == "GET" or path == "/rebalance/preview":
                    continue
                url = path.replace("{client_order_id}", "tp-x")
                r = c.request(method.upper(), url, json={}, headers=_h(keys["read"]))
                _forbidden(r, strongest[(method.upper(), path)])


# ---- 403s per scope, /me, the kill switch: one real server ------------------------------------
def test_scopes_kill_switch_and_me_on_a_real_server(server: Server, api_env: ApiEnv, keys: dict[str, str]) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        # who am I
        me = {s: c.get("/me", headers=_h(k)).json() for s, k in keys.items()}
        assert me["read"]["name"] == "watcher" and me["read"]["scopes"] == ["read"]
        assert me["trade"]["scopes"] == ["read", "trade"] and me["admin"]["scopes"] == ["read", "trade", "admin"]
        assert c.get("/me").status_code == 401

        # read: every GET, nothing that changes anything
        for path in ("/signals", "/orders", "/positions", "/risk", "/kill-switch", "/dashboard/status"):
            assert c.get(path, headers=_h(keys["read"])).status_code == 200, path
        _forbidden(c.post("/orders", json=ORDER, headers=_h(keys["read"])), "trade")
        _forbidden(c.post("/orders", content=b"not json at all", headers=_h(keys["read"])), "trade")  # 403 before 415/422
        _forbidden(c.delete("/orders/tp-x", headers=_h(keys["read"])), "trade")
        _forbidden(c.patch("/orders/tp-x", json={"quantity": "2"}, headers=_h(keys["read"])), "trade")
        _forbidden(c.put("/kill-switch", json={"engaged": True, "reason": "x"}, headers=_h(keys["read"])), "admin")
        assert c.post("/rebalance/preview", json={"targets": [{"symbol": "GOOG", "weight": "0.1"}]},
                      headers=_h(keys["read"])).status_code == 200

        # trade: orders yes, kill switch no
        r = c.post("/orders", json=ORDER, headers=_h(keys["trade"]))
        assert r.status_code == 201, r.text
        _forbidden(c.put("/kill-switch", json={"engaged": True, "reason": "x"}, headers=_h(keys["trade"])), "admin")
        assert c.get("/kill-switch", headers=_h(keys["trade"])).json()["engaged"] is False

        # bad kill switch bodies: a clear 422 each, and the switch stays as it was
        admin = _h(keys["admin"])
        for bad in ({"engaged": True}, {"engaged": True, "reason": "   "}, {"engaged": "maybe", "reason": "x"},
                    {"active": True, "reason": "x"}, {"engaged": True, "reason": "x" * 501}):
            r = c.put("/kill-switch", json=bad, headers=admin)
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["detail"][0]["loc"][0] == "body"
        assert c.get("/kill-switch", headers=admin).json()["engaged"] is False

        # admin engages it: recorded with the key's name, in the store the CLI and risk engine read
        r = c.put("/kill-switch", json={"engaged": True, "reason": "broker outage"}, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["engaged"] is True and r.json()["updated_by"] == "api:ops-lead"
        got = c.get("/kill-switch", headers=_h(keys["read"])).json()
        assert got["engaged"] is True and got["reason"] == "broker outage" and got["updated_by"] == "api:ops-lead"
        assert c.get("/risk", headers=_h(keys["read"])).json()["kill_switch"]["active"] is True
        store = OpsStore(api_env.store_url)
        assert store.kill_switch().active is True and store.kill_switch().updated_by == "api:ops-lead"
        store.close()
        # ...and every new order is refused, an admin's too
        for who in ("trade", "admin"):
            r = c.post("/orders", json=ORDER, headers=_h(keys[who]))
            assert r.status_code == 422 and r.json()["detail"]["rule"] == "kill_switch", r.text
            assert "broker outage" in r.json()["detail"]["reason"]

        # the CLI sees the same switch and releases it; the API shows who did
        env = api_env.environ()
        cli = subprocess.run([TRADING, "kill-switch", "status", "--json"],
                             env=env, cwd=api_env.home, capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["active"] is True and json.loads(cli.stdout)["updated_by"] == "api:ops-lead"
        off = subprocess.run([TRADING, "kill-switch", "off", "--reason", "back"],
                             env=env, cwd=api_env.home, capture_output=True, text=True, timeout=120)
        assert off.returncode == 0, off.stderr
        got = c.get("/kill-switch", headers=admin).json()
        assert got["engaged"] is False and got["updated_by"].startswith("cli:")
        assert c.post("/orders", json={**ORDER, "quantity": "2"}, headers=_h(keys["trade"])).status_code == 201

        # a revoked admin key is just a bad key
        store = OpsStore(api_env.store_url)
        admin_id = next(k.id for k in list_keys(store) if k.name == "ops-lead")
        store.revoke_api_key(admin_id)
        store.close()
        deadline = time.monotonic() + 10  # the key checker caches for 5 s
        while time.monotonic() < deadline and c.get("/me", headers=admin).status_code != 401:
            time.sleep(0.25)
        assert c.put("/kill-switch", json={"engaged": True, "reason": "x"}, headers=admin).status_code == 401


def test_websocket_needs_an_active_key_any_scope_reads(server: Server, keys: dict[str, str]) -> None:
    async def hello(key: str) -> dict:
        async with websockets.connect(f"{server.ws_url}/ws?api_key={key}", open_timeout=10) as ws:
            await ws.send(json.dumps({"action": "subscribe", "channels": ["signals"]}))
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if m["type"] == "subscribed":
                    return m

    assert asyncio.run(hello(keys["read"]))["type"] == "subscribed"


# ---- the rate limit --------------------------------------------------------------------------
def test_rate_limit_429_with_retry_after_per_key_cached_answers_included(api_env: ApiEnv, keys: dict[str, str]) -> None:
    s = Server(api_env, extra_env={"TRADING_API_RATE_LIMIT": "6"})  # 6 in a burst, then a token every 10 s
    try:
        with httpx.Client(base_url=s.url, timeout=10) as c:
            h = _h(keys["read"])
            t0 = time.monotonic()
            codes = []
            while len(codes) < 100 and (not codes or codes[-1] == 200):
                codes.append(c.get("/signals", headers=h).status_code)  # repeats are answered from the cache
            elapsed = time.monotonic() - t0
            assert codes[-1] == 429 and set(codes[:-1]) == {200}
            assert 6 <= len(codes) - 1 <= 6 + elapsed / 10 + 1  # the burst, plus what refilled meanwhile
            r = c.get("/signals", headers=h)
            assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 10
            assert "6 requests per minute" in r.json()["detail"] and "TRADING_API_RATE_LIMIT" in r.json()["detail"]
            assert r.headers.get("x-request-id")  # still logged and traceable like any answer

            # the WebSocket handshake and writes count too: refused while the bucket is empty
            async def handshake() -> int:
                try:
                    async with websockets.connect(f"{s.ws_url}/ws?api_key={keys['read']}", open_timeout=10):
                        return 101
                except websockets.exceptions.InvalidStatus as exc:
                    return exc.response.status_code

            assert asyncio.run(handshake()) == 403
            assert c.post("/orders", json=ORDER, headers=h).status_code == 429  # before any scope, risk or broker work
            # per key: the others are untouched; keyless routes are not limited
            assert c.get("/signals", headers=_h(keys["trade"])).status_code == 200
            assert c.post("/orders", json=ORDER, headers=_h(keys["admin"])).status_code == 201
            assert all(c.get("/health").status_code in (200, 503) for _ in range(20))
            # honouring Retry-After is enough
            r = c.get("/signals", headers=h)
            if r.status_code == 429:
                time.sleep(int(r.headers["retry-after"]) + 0.1)
                r = c.get("/signals", headers=h)
            assert r.status_code == 200
        log = s.log_path.read_text()
        assert "status=429" in log or '"status": 429' in log
    finally:
        s.stop()


def test_rate_limit_zero_turns_it_off_and_a_negative_one_is_refused(
    api_env: ApiEnv, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for limit, expect_limited in ((3, True), (0, False)):
        app = create_app(api_env.settings.model_copy(update={"api_rate_limit": limit}))
        with TestClient(app) as c:
            codes = [c.get("/me", headers=_h(keys["read"])).status_code for _ in range(40)]
        assert (429 in codes) is expect_limited, (limit, codes)
        if expect_limited:
            assert codes[:3] == [200] * 3 and codes[3] == 429
    with pytest.raises(ValidationError, match="api_rate_limit"):
        Settings(home=api_env.home, api_rate_limit=-1)
    monkeypatch.setenv("TRADING_API_RATE_LIMIT", "lots")
    with pytest.raises(ValidationError, match="api_rate_limit"):
        Settings(home=api_env.home)


def test_token_bucket_refills_and_forgets_old_keys() -> None:
    now = [0.0]
    b = TokenBuckets(6, max_keys=2, clock=lambda: now[0])  # a token every 10 s
    assert [b.take("a") for _ in range(6)] == [0.0] * 6
    assert b.take("a") == pytest.approx(10.0)
    now[0] = 5.0
    assert b.take("a") == pytest.approx(5.0)  # half a token back: 5 s to go (a refused call spends nothing)
    now[0] = 10.0
    assert b.take("a") == 0.0
    b.take("b")
    b.take("c")  # "a" was least recently used: dropped, starts full again
    assert len(b._buckets) == 2 and "a" not in b._buckets
    with pytest.raises(ValueError, match="TRADING_API_RATE_LIMIT"):
        TokenBuckets(-1)


# ---- keys: creation, the CLI, the migration ----------------------------------------------------
def test_create_key_scopes_and_bad_scope(api_env: ApiEnv) -> None:
    store = OpsStore(api_env.store_url)
    before = len(list_keys(store, include_revoked=True))
    with pytest.raises(ValueError, match="read, trade, admin"):
        create_key(store, "x", "superuser")
    assert len(list_keys(store, include_revoked=True)) == before  # nothing stored
    rec, key = create_key(store, "reader", "read")
    assert rec.scope == "read" and KeyChecker(store).check(key)["scope"] == "read"
    # a row with a scope this release does not know grants nothing (not "read", not a guess)
    with store.transaction() as conn:
        conn.execute(sa.text("UPDATE api_keys SET scope = 'root' WHERE id = :i"), {"i": rec.id})
    assert KeyChecker(store).check(key) is None
    store.close()


def test_cli_create_with_scope_and_list_shows_it(tmp_path, monkeypatch) -> None:
    import typer

    from trading_api.cli import register
    from trading_pipeline.settings import get_settings

    monkeypatch.setenv("TRADING_HOME", str(tmp_path))
    get_settings.cache_clear()
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    try:
        default = json.loads(runner.invoke(app, ["api-key", "create", "bot", "--json"]).stdout)
        assert default["scope"] == "trade" and default["scopes"] == ["read", "trade"]
        r = runner.invoke(app, ["api-key", "create", "ops", "--scope", "admin"])
        assert r.exit_code == 0 and "scope admin" in r.stderr
        r = runner.invoke(app, ["api-key", "create", "x", "--scope", "root"])
        assert r.exit_code == 2 and "root" in r.output and "read" in r.output
        listed = json.loads(runner.invoke(app, ["api-key", "list", "--json"]).stdout)
        assert [(k["name"], k["scope"]) for k in listed] == [("bot", "trade"), ("ops", "admin")]
        table = runner.invoke(app, ["api-key", "list"]).stdout
        assert "scope" in table and any("ops" in ln and "admin" in ln for ln in table.splitlines())
        assert "--scope" in runner.invoke(app, ["api-key", "create", "--help"]).stdout
    finally:
        get_settings.cache_clear()


def test_migration_gives_existing_keys_trade(tmp_path) -> None:
    """A store at 0008 with a key made before scopes: after opening, the key still places
    orders (``trade``) and is not an admin; the downgrade drops the column and keeps the key."""
    url = f"sqlite:///{tmp_path / 'ops.sqlite'}"
    engine = _sqlite_engine(url)
    with engine.begin() as conn:
        migrations.upgrade(conn, "0008_corporate_action_events")
        conn.execute(sa.text("INSERT INTO api_keys (name, key_hash, created_at) VALUES ('old', :h, '2026-01-02 03:04:05')"),
                     {"h": hash_key("trd_" + "o" * 43)})
    engine.dispose()
    store = OpsStore(url)
    assert store.schema_revision() == migrations.head()  # 0009 and whatever came after
    record = KeyChecker(store).check("trd_" + "o" * 43)
    assert record is not None and record["scope"] == "trade"
    with store.transaction() as conn:
        migrations.downgrade(conn, "0008_corporate_action_events")
        assert "scope" not in {c["name"] for c in sa.inspect(conn).get_columns("api_keys")}
        assert conn.execute(sa.text("SELECT name FROM api_keys")).scalars().all() == ["old"]
    store.migrate()
    assert [(k.name, k.scope) for k in list_keys(store)] == [("old", "trade")]
    store.close()
