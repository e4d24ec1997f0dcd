"""publish_snapshot: tables copied, feed with continuing seq, atomic replace, writer-connection path."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import duckdb

from tests.api.support import START, add_signals, build_warehouse, daily_bars
from trading_pipeline.marketdata.warehouse import upsert_bars, writer
from trading_pipeline.serving.publish import publish_snapshot, publish_snapshot_detailed
from trading_pipeline.serving.snapshot import snapshot_info


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"ATTACH '{path}' AS s (READ_ONLY)")
    con.execute("USE s")
    return con


def test_copies_what_exists_and_skips_missing_marts(tmp_path: Path) -> None:
    wh = tmp_path / "warehouse.duckdb"
    build_warehouse(wh, with_marts=False)
    r = publish_snapshot_detailed(wh, tmp_path / "serving")
    assert r.path == tmp_path / "serving" / "serving.duckdb"
    # (raw.bars_rejected too: the CLI's readers read the snapshot, not the warehouse)
    assert set(r.tables) == {"raw.symbols", "raw.bars_daily", "raw.bars_intraday", "raw.bars_rejected"}
    assert r.sequence == 1 and r.new_items == 0  # first sight of bars is history, not news
    meta = snapshot_info(r.path)
    assert meta["sequence"] == 1 and '"raw.bars_daily": 120' in meta["source_rows"]
    # marts land later: now they are copied, including views (materialised in the snapshot)
    with writer(wh) as con:
        from tests.api.support import MARTS_DDL

        for stmt in MARTS_DDL:
            con.execute(stmt)
        add_signals(con, [("GOOG", START + timedelta(days=3), "crp_long", 90.0)])
    r2 = publish_snapshot_detailed(wh, tmp_path / "serving")
    assert r2.sequence == 2
    assert {"marts.signals", "marts.alerts", "marts.scan_results", "marts.indicators_daily"} <= set(r2.tables)
    con = _open(r2.path)
    kinds = con.sql("SELECT table_type FROM information_schema.tables WHERE table_schema = 'marts'").fetchall()
    assert {k[0] for k in kinds} == {"BASE TABLE"}
    assert con.sql("SELECT channel, seq FROM feed ORDER BY seq").fetchall() == [("signals", 1), ("alerts", 2)]
    con.close()


def test_feed_seq_continues_and_only_new_items_are_fed(tmp_path: Path) -> None:
    wh = tmp_path / "warehouse.duckdb"
    build_warehouse(wh)
    serving = tmp_path / "serving"
    r1 = publish_snapshot_detailed(wh, serving)
    assert r1.new_items == 6 and r1.feed_head_seq == 6  # 4 signals + 2 alerts on first sight
    r_same = publish_snapshot_detailed(wh, serving)  # nothing changed: nothing new
    assert r_same.new_items == 0 and r_same.feed_head_seq == 6 and r_same.sequence == 2
    with writer(wh) as con:
        upsert_bars(con, "raw.bars_daily", daily_bars("GOOG", 61), "test")
        add_signals(con, [("GOOG", START + timedelta(days=60), "crp_long", 71.0)])
    r3 = publish_snapshot_detailed(wh, serving)
    con = _open(r3.path)
    rows = con.sql("SELECT seq, channel, key FROM feed WHERE seq > 6 ORDER BY seq").fetchall()
    con.close()
    assert [(s, c) for s, c, _ in rows] == [(7, "bars:GOOG"), (8, "signals"), (9, "alerts")]
    assert rows[0][2] == "GOOG|1d|2024-03-01T00:00:00"
    assert r3.feed_head_seq == 9


def test_atomic_replace_new_inode_and_no_leftovers(tmp_path: Path) -> None:
    wh = tmp_path / "warehouse.duckdb"
    build_warehouse(wh)
    serving = tmp_path / "serving"
    p = publish_snapshot(wh, serving)
    ino = os.stat(p).st_ino
    (serving / ".serving-999-dead.duckdb.tmp").write_bytes(b"half-built by a crashed publisher")
    p2 = publish_snapshot(wh, serving)
    assert os.stat(p2).st_ino != ino
    names = sorted(x.name for x in serving.iterdir())
    assert names == [".publish.lock", "publish_state.json", "serving.duckdb"]
    publish_snapshot(wh, serving, keep_generations=2)
    publish_snapshot(wh, serving, keep_generations=2)
    publish_snapshot(wh, serving, keep_generations=2)
    gens = sorted(x.name for x in serving.glob("serving.0*.duckdb"))
    assert gens == ["serving.00000003.duckdb", "serving.00000004.duckdb"]  # the two before the current 5


def test_publish_through_the_writers_own_connection(tmp_path: Path) -> None:
    """Inside a Dagster asset the run holds the warehouse open; the copy goes through it."""
    wh = tmp_path / "warehouse.duckdb"
    build_warehouse(wh)
    with writer(wh) as con:
        add_signals(con, [("MSFT", START + timedelta(days=59), "breakout_up", 3.0)])
        r = publish_snapshot_detailed(wh, tmp_path / "serving", con)
        # the connection is left usable, with no snapshot databases attached
        assert con.sql("SELECT count(*) FROM marts.signals").fetchall()[0][0] == 5
        names = {d[0] for d in con.sql("SELECT database_name FROM duckdb_databases()").fetchall()}
        assert not any(n.startswith("_serving") for n in names)
    assert r.tables["marts.signals"] == 5
    assert snapshot_info(r.path)["sequence"] == 1


def test_nan_becomes_null_in_feed_payloads(tmp_path: Path) -> None:
    import json

    wh = tmp_path / "warehouse.duckdb"
    build_warehouse(wh)
    publish_snapshot(wh, tmp_path / "serving")
    with writer(wh) as con:
        con.execute(
            "INSERT INTO marts.signals VALUES ('s', 'GOOG', '1d', '2024-05-01', '2024-05-01', 'crp_long', 'long', 'NaN'::DOUBLE, 'r', 'inf'::DOUBLE, NULL, 'fp', NULL)"
        )
    r = publish_snapshot_detailed(wh, tmp_path / "serving")
    con = _open(r.path)
    payload = con.sql("SELECT payload FROM feed WHERE channel = 'signals' ORDER BY seq DESC LIMIT 1").fetchall()[0][0]
    con.close()
    data = json.loads(payload, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert data["score"] is None and data["close"] is None
