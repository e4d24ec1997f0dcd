"""Snapshot responses cached per generation: same answers as the full path, never stale, auth kept.

The fast path (trading_api.response_cache) answers a repeated request line from the snapshot
reader's cache without FastAPI's parameter parsing; these tests pin that it is invisible to
clients except for speed: identical bodies and headers, ETag/304, a new snapshot changes
the answer at once, a bad or revoked key still gets 401, and metrics count every request.
"""

from __future__ import annotations

from datetime import date

from fastapi.testclient import TestClient

from tests.api.support import ApiEnv, add_signals
from trading_api.keys import create_key, revoke_key
from trading_api.main import create_app
from trading_pipeline.marketdata.warehouse import writer
from trading_pipeline.serving.publish import publish_snapshot
from trading_pipeline.trading.store import OpsStore

URL = "/signals?limit=5&kind=crp_long"


def _cache(client: TestClient):  # noqa: ANN202
    stack = client.app.middleware_stack
    while type(stack).__name__ != "ResponseCache":
        stack = stack.app
    return stack


def test_repeat_is_served_by_the_cache_with_the_same_body_and_headers(client: TestClient) -> None:
    first = client.get(URL)
    assert first.status_code == 200
    cache = _cache(client)
    assert ("/signals", b"limit=5&kind=crp_long") in cache._routes  # learned from FastAPI's answer
    assert cache.hits == 0
    second = client.get(URL)
    assert second.status_code == 200 and cache.hits == 1
    assert second.content == first.content
    drop = {"x-request-id"}
    assert {k: v for k, v in first.headers.items() if k not in drop} == {
        k: v for k, v in second.headers.items() if k not in drop
    }
    assert second.headers["etag"].startswith('W/"1-') and second.headers["content-type"] == "application/json"
    # a different query line is its own entry, with its own answer
    other = client.get("/signals?limit=5&kind=crp_short")
    assert other.status_code == 200 and other.content != first.content


def test_if_none_match_gives_304_until_the_next_snapshot(client: TestClient, api_env: ApiEnv) -> None:
    etag = client.get(URL).headers["etag"]
    for _ in range(2):  # FastAPI path, then the cached path
        r = client.get(URL, headers={"If-None-Match": etag})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    assert client.get(URL, headers={"If-None-Match": 'W/"other"'}).status_code == 200
    with writer(api_env.warehouse) as con:
        add_signals(con, [("GOOG", date(2030, 1, 2), "crp_long", 99.0)])
    publish_snapshot(api_env.warehouse, api_env.settings.serving_dir)
    r = client.get(URL, headers={"If-None-Match": etag})
    assert r.status_code == 200 and r.headers["etag"] != etag


def test_a_new_snapshot_changes_the_cached_answer_at_once(client: TestClient, api_env: ApiEnv) -> None:
    before = client.get(URL).json()
    assert client.get(URL).json() == before  # cached
    with writer(api_env.warehouse) as con:
        add_signals(con, [("MSFT", date(2030, 1, 3), "crp_long", 42.0)])
    publish_snapshot(api_env.warehouse, api_env.settings.serving_dir)
    after = client.get(URL).json()
    assert after["total"] == before["total"] + 1
    assert after["items"][0]["symbol"] == "MSFT" and after["items"][0]["session_date"] == "2030-01-03"
    assert client.get(URL).json() == after


def test_missing_wrong_and_revoked_keys_are_refused_on_a_cached_line(client: TestClient, api_env: ApiEnv) -> None:
    assert client.get(URL).status_code == 200
    assert client.get(URL).status_code == 200  # now cached
    hits = _cache(client).hits
    assert client.get(URL, headers={"X-API-Key": ""}).status_code == 401
    assert client.get(URL, headers={"X-API-Key": "trd_wrong"}).status_code == 401
    store = OpsStore(api_env.store_url)
    record, key = create_key(store, "temp")
    assert client.get(URL, headers={"X-API-Key": key}).status_code == 200
    assert client.get(URL, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert revoke_key(store, record.id)
    client.app.state.trading.checker()._cache.clear()  # skip the 5 s positive cache
    assert client.get(URL, headers={"X-API-Key": key}).status_code == 401
    # the new key is checked against the store once (through FastAPI), then answered from memory
    assert _cache(client).hits == hits + 1
    store.close()


def test_bad_parameters_still_get_422_after_good_ones_were_cached(client: TestClient) -> None:
    assert client.get("/signals?limit=5").status_code == 200
    assert client.get("/signals?limit=5").status_code == 200
    r = client.get("/signals?limit=5000")
    assert r.status_code == 422 and "limit" in r.text
    assert client.post("/signals?limit=5").status_code == 405


def test_metrics_count_cached_answers_under_the_route_template(api_env: ApiEnv) -> None:
    with TestClient(create_app(api_env.settings)) as c:
        c.headers.update(api_env.headers())
        for _ in range(5):
            assert c.get(URL).status_code == 200
        text = c.get("/metrics").text
    line = next(
        ln for ln in text.splitlines()
        if ln.startswith("trading_api_requests_total") and 'route="/signals"' in ln and 'status="200"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) == 5.0


def test_cors_headers_on_cached_answers(api_env: ApiEnv) -> None:
    settings = api_env.settings.model_copy(update={"cors_origins": ["http://localhost:5173"]})
    with TestClient(create_app(settings)) as c:
        c.headers.update({**api_env.headers(), "Origin": "http://localhost:5173"})
        for _ in range(2):
            r = c.get(URL)
            assert r.status_code == 200
            assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
