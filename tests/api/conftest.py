"""Fixtures for the API: a real temp warehouse, a real published snapshot, a real ops store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.support import ApiEnv, Server, build_warehouse
from trading_api.keys import create_key
from trading_api.main import create_app
from trading_pipeline.serving.publish import publish_snapshot
from trading_pipeline.settings import PROJECT_DIR, Settings
from trading_pipeline.trading.store import OpsStore


@pytest.fixture
def api_env(tmp_path: Path) -> Iterator[ApiEnv]:
    home = tmp_path / "home"
    home.mkdir()
    settings = Settings(home=home, risk_file=PROJECT_DIR / "risk.yaml", broker="paper")
    build_warehouse(settings.warehouse_path)
    publish_snapshot(settings.warehouse_path, settings.serving_dir)
    store = OpsStore(settings.ops_store_url)
    _record, key = create_key(store, "tests")
    store.close()
    yield ApiEnv(home, settings, settings.warehouse_path, settings.serving_dir, key, settings.ops_store_url)


@pytest.fixture
def client(api_env: ApiEnv) -> Iterator[TestClient]:
    app = create_app(api_env.settings, poll_interval=0.05, heartbeat=1.0)
    with TestClient(app) as c:
        c.headers.update(api_env.headers())
        yield c


@pytest.fixture
def server(api_env: ApiEnv) -> Iterator[Server]:
    s = Server(api_env)
    yield s
    s.stop()
