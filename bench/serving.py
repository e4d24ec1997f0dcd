"""Benchmark the warehouse and serving: DuckLake (default) beside a DuckDB file, same process.

    .venv/bin/python bench/serving.py                         # 5,000 symbols x 10 years (~12.6M bars)
    .venv/bin/python bench/serving.py --symbols 500 --years 2 # quicker
    .venv/bin/python bench/serving.py --only lake

For each warehouse kind: load the history (all sessions but the last), full ``dbt run``,
publish; append the last session, incremental ``dbt run``, publish. Publish figures: seconds
and bytes written (the growth of the serving folder plus the warehouse's own files: a lake's
catalog and data folder, a file warehouse's serving copy). Then reader latency (p50/p99/max)
of a ``marts.signals`` query in a loop while a full ``dbt run`` rebuilds the warehouse in
another process: on the lake the reader opens the lake itself (last committed snapshot); on
a DuckDB file it cannot (the build holds the file's lock, and a reader holding the file makes
the build fail), so it reads the published copy.
Targets (issue 12): publish < 1 s and proportional to the new session; no read waits on the writer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scan import make_bars  # noqa: E402
from trading_pipeline.marketdata import warehouse as wh  # noqa: E402
from trading_pipeline.marketdata.warehouse import upsert_bars, writer  # noqa: E402
from trading_pipeline.scans import dbt_runner  # noqa: E402
from trading_pipeline.serving.publish import publish_snapshot_detailed  # noqa: E402
from trading_pipeline.serving.snapshot import open_snapshot  # noqa: E402

QUERY = ("SELECT symbol, scan, kind, score FROM marts.signals "
         "WHERE session_date = (SELECT max(session_date) FROM marts.signals) ORDER BY score DESC LIMIT 50")


def _size(*paths: Path) -> int:
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


def _dbt(location: str, target: Path, args: list[str], wait: bool = True):
    env = dbt_runner.dbt_env(location, target_path=target)
    cmd = dbt_runner.dbt_command(args, location)
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-2000:])
        raise SystemExit(f"dbt {' '.join(args)} failed")
    return time.perf_counter() - t0


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def _written() -> int:
    """Bytes this process has written to storage (Linux /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _publish(location: str, serving: Path) -> tuple[float, int, int]:
    os.sync()
    before = _written()
    t0 = time.perf_counter()
    r = publish_snapshot_detailed(location, serving)
    elapsed = time.perf_counter() - t0
    os.sync()
    return elapsed, max(0, _written() - before), r.new_items


def _readers_during_build(kind: str, location: str, serving: Path, target: Path) -> dict:
    """Query marts.signals in a loop while a full dbt run rebuilds the warehouse."""
    lat: list[float] = []  # open + query, as a new `trading sql` or API generation pays
    held: list[float] = []  # the query on a connection kept open (the API's, a notebook's)
    errors: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        keep = wh.connect(location, read_only=True) if kind == "lake" else open_snapshot(serving)
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                keep.sql(QUERY).fetchall()
                held.append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"held: {type(exc).__name__}: {str(exc)[:120]}")
            t0 = time.perf_counter()
            try:
                if kind == "lake":
                    con = wh.connect(location, read_only=True)
                else:  # the file itself is locked by the build (opening it would fail the build)
                    con = open_snapshot(serving)
                con.sql(QUERY).fetchall()
                con.close()
                lat.append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                time.sleep(0.05)
        keep.close()

    proc = _dbt(location, target, ["run", "--full-refresh"], wait=False)
    t = threading.Thread(target=loop)
    t0 = time.perf_counter()
    t.start()
    proc.wait()
    build_s = time.perf_counter() - t0
    stop.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit("dbt run --full-refresh failed")
    return {
        "build_s": round(build_s, 1), "reads": len(lat), "errors": len(errors), "first_error": errors[:1],
        "open_read_p50_ms": round(_pct(lat, 0.5) * 1000, 1), "open_read_p99_ms": round(_pct(lat, 0.99) * 1000, 1),
        "open_read_max_ms": round(max(lat) * 1000, 1) if lat else None,
        "held_reads": len(held), "held_p50_ms": round(_pct(held, 0.5) * 1000, 1),
        "held_p99_ms": round(_pct(held, 0.99) * 1000, 1),
    }


def run_kind(kind: str, bars: pl.DataFrame, tmp: Path) -> dict:
    home = tmp / kind
    home.mkdir()
    location = (f"ducklake:sqlite:{home / 'warehouse' / 'catalog.sqlite'}" if kind == "lake"
                else str(home / "warehouse.duckdb"))
    serving, target = home / "serving", home / "target"
    last_ts = bars["ts"].max()
    history, last = bars.filter(pl.col("ts") < last_ts), bars.filter(pl.col("ts") == last_ts)
    t0 = time.perf_counter()
    with writer(location) as con:
        upsert_bars(con, "raw.bars_daily", history, "synthetic")
    load_s = time.perf_counter() - t0
    _dbt(location, target, ["parse"])
    full_s = _dbt(location, target, ["run"])
    pub1_s, pub1_b, _ = _publish(location, serving)
    t0 = time.perf_counter()
    with writer(location) as con:
        upsert_bars(con, "raw.bars_daily", last, "synthetic")
    append_s = time.perf_counter() - t0
    inc_s = _dbt(location, target, ["run"])
    # the publish after a one-session scan: what every end-of-day run pays
    pub2_s, pub2_b, new_items = _publish(location, serving)
    pub3_s, pub3_b, _ = _publish(location, serving)  # and with nothing new
    readers = _readers_during_build(kind, location, serving, target)
    out = {
        "kind": kind, "load_history_s": round(load_s, 1), "full_run_s": round(full_s, 1),
        "append_session_s": round(append_s, 2), "incremental_run_s": round(inc_s, 1),
        "publish_after_full_s": round(pub1_s, 2), "publish_after_full_mb": round(pub1_b / 1e6, 1),
        "publish_one_session_s": round(pub2_s, 2), "publish_one_session_mb": round(pub2_b / 1e6, 2),
        "publish_one_session_items": new_items,
        "publish_nothing_new_s": round(pub3_s, 2), "publish_nothing_new_mb": round(pub3_b / 1e6, 2),
        "warehouse_mb": round(_size(home / "warehouse", home / "warehouse.duckdb") / 1e6, 1),
        "readers_during_full_build": readers,
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=5000)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--only", choices=["lake", "file"], help="run one kind only")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    opts = ap.parse_args()
    from datetime import date

    tmp = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    bars = make_bars(opts.symbols, opts.years, date(2025, 12, 31))
    print(f"data: {bars.height:,} daily bars, {opts.symbols} symbols x {opts.years} years", flush=True)
    results = [run_kind(k, bars, tmp) for k in ("lake", "file") if opts.only in (None, k)]
    if len(results) == 2:
        lake, file = results
        print(json.dumps({
            "publish_one_session_speedup": round(file["publish_one_session_s"] / max(lake["publish_one_session_s"], 1e-3), 1),
            "publish_one_session_bytes_ratio": round(file["publish_one_session_mb"] / max(lake["publish_one_session_mb"], 1e-3), 1),
        }))
    if opts.keep:
        print(f"kept {tmp}")
    else:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    main()
