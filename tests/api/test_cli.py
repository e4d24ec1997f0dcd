"""`trading api-key create|list|revoke` through register() on a Typer app."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from trading_api.cli import RedactKeys, register
from trading_api.keys import KeyChecker, hash_key
from trading_pipeline.trading.store import OpsStore


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_api_key_lifecycle(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRADING_HOME", str(tmp_path))
    from trading_pipeline.settings import get_settings

    get_settings.cache_clear()
    runner = CliRunner()
    app = _app()
    r = runner.invoke(app, ["api-key", "create", "dashboard", "--json"])
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)
    key = created["key"]
    assert key.startswith("trd_") and len(key) > 40
    store = OpsStore(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    assert store.find_api_key(hash_key(key))["name"] == "dashboard"
    assert key not in (tmp_path / "ops.sqlite").read_bytes().decode("latin-1")  # only the hash is stored
    listed = json.loads(runner.invoke(app, ["api-key", "list", "--json"]).stdout)
    assert [k["name"] for k in listed] == ["dashboard"] and "key" not in listed[0]
    assert KeyChecker(store).check(key) is not None
    r = runner.invoke(app, ["api-key", "revoke", str(created["id"]), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["revoked"] is True
    assert KeyChecker(store).check(key) is None
    assert runner.invoke(app, ["api-key", "revoke", str(created["id"])]).exit_code == 1
    assert json.loads(runner.invoke(app, ["api-key", "list", "--json"]).stdout) == []
    assert len(json.loads(runner.invoke(app, ["api-key", "list", "--all", "--json"]).stdout)) == 1
    # for people: a table with a header row and one row per key (issue 20.7)
    table = runner.invoke(app, ["api-key", "list", "--all"]).stdout
    lines = table.splitlines()
    assert lines[0].startswith("API keys (1)")
    header = next(ln for ln in lines if "name" in ln and "state" in ln)
    assert "id" in header and "created (UTC)" in header
    row = next(ln for ln in lines if "dashboard" in ln)
    assert f"{created['id']}" in row and "revoked 20" in row
    r = runner.invoke(app, ["api-key", "create", "plain"])
    assert r.exit_code == 0 and r.stdout.strip().startswith("trd_")
    store.close()
    get_settings.cache_clear()


def test_api_command_has_host_port_and_graceful_timeout() -> None:
    r = CliRunner().invoke(_app(), ["api", "--help"])
    assert r.exit_code == 0
    for opt in ("--host", "--port", "--timeout-graceful-shutdown"):
        assert opt in r.stdout


def test_keys_in_ws_urls_are_redacted_from_logs() -> None:
    import logging

    rec = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
                            ("127.0.0.1:1", "/ws?api_key=trd_secret&x=1"), None)
    RedactKeys().filter(rec)
    assert "trd_secret" not in rec.getMessage() and "api_key=***&x=1" in rec.getMessage()
