"""Shared fixtures: an isolated TRADING_HOME per test, so no test sees another's state."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")


@pytest.fixture
def trading_home(tmp_path, monkeypatch):
    """A fresh TRADING_HOME (warehouse, ops store, DAGSTER_HOME) for one test."""
    from trading_pipeline.settings import get_settings

    home = tmp_path / "trading"
    monkeypatch.setenv("TRADING_HOME", str(home))
    monkeypatch.delenv("TRADING_WAREHOUSE", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the whole session (tests/pg.py).

    Fails (never skips) when the server binaries are missing: `make test` installs them.
    """
    from tests.pg import start_cluster

    try:
        cluster = start_cluster()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield cluster
    try:
        cluster.stop()
    finally:
        cluster.remove()


@pytest.fixture
def pg_database(pg_cluster):
    """A fresh, empty database on the session cluster (dropped afterwards): its name."""
    name = pg_cluster.create_database("test")
    yield name
    pg_cluster.drop_database(name)
