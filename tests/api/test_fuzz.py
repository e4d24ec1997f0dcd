"""Bodies schemathesis does not send: bytes that are not JSON at all, or not declared as JSON.

test_schemathesis.py fuzzes every operation from the OpenAPI schema; its bodies are JSON
values (right or wrong for the schema) sent as ``application/json``. This covers the rest of
what a client can put on the wire for POST /orders: truncated or binary bodies, numbers
JSON cannot hold, deep nesting, a large body, and other content types. Each gets a 4xx
whose ``detail`` says what is wrong, never a 5xx.
"""

from __future__ import annotations

import json
import random

import pytest
from fastapi.testclient import TestClient

SEED = 20261124
ORDER = {"symbol": "GOOG", "side": "buy", "quantity": "1"}


def _assert_clear_4xx(r, what) -> None:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])
    body = r.json()
    assert body["detail"] and body["request_id"], (what, body)


def test_raw_bodies_are_4xx(client: TestClient) -> None:
    rnd = random.Random(SEED)
    blobs = [
        b"", b"{", b"[", b"nul", b'{"symbol": }', b"\xff\xfe", "{\"symbol\": \"G\u00d6\u00d6G\"}".encode("latin-1"),
        b'{"symbol": "GOOG", "side": "buy", "quantity": 1e999}',
        b'{"symbol": "GOOG", "side": "buy", "quantity": NaN}',
        b'{"symbol": "GOOG", "side": "buy", "quantity": "1' + b"0" * 400 + b'"}',
        b"[" * 100_000,  # nesting deeper than the JSON parser's recursion limit
        json.dumps({"a": [[[[[[1]]]]]]}).encode(),
        json.dumps({**ORDER, "symbol": "A" * 5_000_000}).encode(),  # 5 MB
    ]
    blobs += [bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 64))) for _ in range(100)]
    for blob in blobs:
        r = client.post("/orders", content=blob, headers={"Content-Type": "application/json"})
        _assert_clear_4xx(r, blob[:80])


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
)
def test_an_order_not_sent_as_json_is_415(client: TestClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post("/orders", content=json.dumps(ORDER).encode(), headers=headers)
    assert r.status_code == 415, r.text
    _assert_clear_4xx(r, content_type)
    assert "application/json" in r.json()["detail"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.api+json"])
def test_json_media_types_are_read(client: TestClient, content_type: str) -> None:
    r = client.post("/orders", content=json.dumps(ORDER).encode(), headers={"Content-Type": content_type})
    assert r.status_code == 201, r.text
