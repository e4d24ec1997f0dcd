"""TRADING_LOG_FORMAT=json: API and Dagster log lines are JSON, with request_id / run_id fields."""

from __future__ import annotations

import json
import logging
from datetime import date

from trading_pipeline.logs import JsonFormatter, formatter


def record(msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord("trading", logging.INFO, __file__, 1, msg, args, None)


def test_key_value_pairs_become_fields():
    line = JsonFormatter().format(record('event=request request_id=%s status=%d path="/signals x"', "abc", 200))
    out = json.loads(line)
    assert out["event"] == "request" and out["request_id"] == "abc" and out["status"] == "200"
    assert out["path"] == "/signals x" and out["level"] == "INFO" and "ts" in out and "msg" in out


def test_unknown_format_is_refused():
    try:
        formatter("xml")
    except ValueError as exc:
        assert "TRADING_LOG_FORMAT" in str(exc)
    else:
        raise AssertionError("xml accepted")


def test_api_request_lines_are_json_with_request_id(tmp_path, monkeypatch, capsys):
    from fastapi.testclient import TestClient

    from trading_api.cli import configure_logging
    from trading_api.main import create_app
    from trading_pipeline.settings import get_settings

    monkeypatch.setenv("TRADING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADING_LOG_FORMAT", "json")
    get_settings.cache_clear()
    try:
        configure_logging("info")
        with TestClient(create_app(get_settings())) as client:
            r = client.get("/health", headers={"X-Request-ID": "req-42"})
        assert r.headers["X-Request-ID"] == "req-42"
        lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
        assert any(x.get("request_id") == "req-42" for x in lines), lines[-5:]
    finally:
        logging.getLogger().handlers[:] = []
        get_settings.cache_clear()


def test_dagster_run_lines_are_json_with_run_id(tmp_path, monkeypatch, capfd):
    from trading_pipeline import runs
    from trading_pipeline.settings import get_settings

    monkeypatch.setenv("TRADING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADING_LOG_FORMAT", "json")
    get_settings.cache_clear()
    runs.definitions.cache_clear()
    try:
        f = tmp_path / "GOOG.csv"
        f.write_text("Date,Open,High,Low,Close,Volume\n2013-03-01,797.8,807.1,796.2,806.2,2175400\n")
        r = runs.run_job("ingest_daily_bars", get_settings(), quiet=False, start=date(2013, 3, 1),
                         run_config={"ops": {"raw__bars_daily": {"config": {"source": "files", "path": str(f)}}}})
        assert r.success
        captured = capfd.readouterr()
        lines = [json.loads(x) for x in (captured.out + captured.err).splitlines() if x.startswith("{")]
        ours = [x for x in lines if "bars_loaded" in json.dumps(x)]
        assert ours and r.run_id in json.dumps(ours[0])
    finally:
        get_settings.cache_clear()
        runs.definitions.cache_clear()
