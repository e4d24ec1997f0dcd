"""Publishing on the DuckLake warehouse: a snapshot id and the change feed, nothing copied."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tests.api.support import START, add_signals, build_warehouse, daily_bars
from trading_api.snapshot import SnapshotReader
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.marketdata.warehouse import upsert_bars, writer
from trading_pipeline.serving.publish import publish_snapshot_detailed
from trading_pipeline.serving.snapshot import open_snapshot, read_pointer, snapshot_info


def _lake(tmp_path: Path) -> str:
    return f"ducklake:sqlite:{tmp_path / 'warehouse' / 'catalog.sqlite'}"


def _feed(serving: Path, since: int) -> list[tuple]:
    con = open_snapshot(serving)
    try:
        return con.sql("SELECT seq, channel, key FROM feed WHERE seq > ? ORDER BY seq", params=[since]).fetchall()
    finally:
        con.close()


def test_publish_records_a_snapshot_and_copies_nothing(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    build_warehouse(lake)
    serving = tmp_path / "serving"
    r = publish_snapshot_detailed(lake, serving)
    pointer = read_pointer(serving)
    assert pointer["snapshot_id"] == r.snapshot_id and pointer["sequence"] == r.sequence == 1
    assert r.data_snapshot is not None and r.snapshot_id > r.data_snapshot
    # the serving folder holds the pointer and its bookkeeping, no copy of the warehouse
    assert sorted(p.name for p in serving.iterdir()) == [".publish.lock", "publish_state.json", "published.json"]
    assert sum(p.stat().st_size for p in serving.iterdir()) < 4096
    assert r.tables["raw.bars_daily"] == 120 and r.tables["marts.signals"] == 4
    meta = snapshot_info(serving)
    assert meta["sequence"] == 1 and meta["warehouse"] == lake and meta["data_snapshot"] == r.data_snapshot


def test_feed_from_the_change_feed_only_new_items(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    build_warehouse(lake)
    serving = tmp_path / "serving"
    r1 = publish_snapshot_detailed(lake, serving)
    assert r1.new_items == 6 and r1.feed_head_seq == 6  # 4 signals + 2 alerts on first sight; bars are history
    r_same = publish_snapshot_detailed(lake, serving)
    assert r_same.new_items == 0 and r_same.feed_head_seq == 6 and r_same.sequence == 2
    with writer(lake) as con:  # re-loading stored bars is not news
        upsert_bars(con, "raw.bars_daily", daily_bars("GOOG", 60), "test")
    assert publish_snapshot_detailed(lake, serving).new_items == 0
    with writer(lake) as con:
        upsert_bars(con, "raw.bars_daily", daily_bars("GOOG", 61), "test")  # one new session
        add_signals(con, [("GOOG", START + timedelta(days=60), "crp_long", 71.0)])
    r3 = publish_snapshot_detailed(lake, serving)
    rows = _feed(serving, 6)
    assert [(s, c) for s, c, _ in rows] == [(7, "bars:GOOG"), (8, "signals"), (9, "alerts")]
    assert rows[0][2] == "GOOG|1d|2024-03-01T00:00:00"
    assert r3.feed_head_seq == 9 and r3.new_items == 3


def test_a_rebuilt_signals_table_feeds_only_the_new_signals(tmp_path: Path) -> None:
    """dbt replaces a table on a full refresh: every row is re-inserted, only new keys are news."""
    lake = _lake(tmp_path)
    build_warehouse(lake)
    serving = tmp_path / "serving"
    publish_snapshot_detailed(lake, serving)
    with writer(lake) as con:
        con.execute("CREATE OR REPLACE TABLE marts.signals AS SELECT * FROM marts.signals")
        add_signals(con, [("MSFT", START + timedelta(days=58), "breakout_up", 2.0)])
    publish_snapshot_detailed(lake, serving)
    assert [(c, k.split("|")[1]) for _, c, k in _feed(serving, 6)] == [("signals", "MSFT")]


def test_readers_are_pinned_to_the_published_snapshot(tmp_path: Path) -> None:
    """A commit after the publish is invisible to the API until the next publish."""
    lake = _lake(tmp_path)
    build_warehouse(lake)
    serving = tmp_path / "serving"
    publish_snapshot_detailed(lake, serving)
    reader = SnapshotReader(serving)
    assert reader.query("SELECT count(*) AS n FROM marts.signals")[0]["n"] == 4
    with writer(lake) as con:
        add_signals(con, [("GOOG", START + timedelta(days=59), "crp_long", 99.0)])
    assert reader.query("SELECT count(*) AS n FROM marts.signals")[0]["n"] == 4
    con = wh.connect(lake, read_only=True)  # the lake itself has it at once
    assert con.sql("SELECT count(*) FROM marts.signals").fetchall()[0][0] == 5
    con.close()
    publish_snapshot_detailed(lake, serving)
    assert reader.query("SELECT count(*) AS n FROM marts.signals")[0]["n"] == 5
    assert reader.current().sequence == 2
    reader.close()


def test_feed_retention_window(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    build_warehouse(lake)
    serving = tmp_path / "serving"
    publish_snapshot_detailed(lake, serving, feed_retention=5)
    for day in range(61, 64):
        with writer(lake) as con:
            upsert_bars(con, "raw.bars_daily", daily_bars("GOOG", day), "test")
        publish_snapshot_detailed(lake, serving, feed_retention=5)
    meta = snapshot_info(serving)
    assert meta["feed_head_seq"] == 9 and meta["feed_oldest_seq"] == 5
    assert [s for s, _, _ in _feed(serving, 0)] == [5, 6, 7, 8, 9]
    assert read_pointer(serving)["sequence"] == 4
