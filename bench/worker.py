"""A one-session `trading scan` on the demo home, as a user runs it, with and without the warm
worker (`trading worker start`), in the same run.

    .venv/bin/python bench/worker.py                      # demo home in a temp folder, 3 scans each way
    .venv/bin/python bench/worker.py --home /tmp/w/home --repeat 5 --json

Builds the demo home (`trading demo`, timed) unless ``--home`` already holds one, then times
`trading scan --date 2013-03-01 --json` as a subprocess (wall clock, start-up included):
``--repeat`` times in its own process (``TRADING_WORKER=off``, the baseline), then the same
scans handed to a worker (started and timed once, then reused), and prints min / median of
each, the ratio, each run's Dagster steps, and whether the issue's target (<= 10 s) is met.
Every scan re-loads the session's bars (the sample source), so each one does the same work:
a load, its checks, an incremental dbt build of the changed symbols, a publish.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import _cli  # noqa: E402

SESSION = "2013-03-01"
TARGET_S = 10.0


def trading(home: Path, *args: str, off: bool = False, timeout: float = 1800) -> tuple[float, dict]:
    env = _cli.home_env(home)
    if off:
        env["TRADING_WORKER"] = "off"
    t0 = time.perf_counter()
    proc = subprocess.run([str(_cli.TRADING), *args, "--json"], env=env, cwd=home.parent, capture_output=True,
                          text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"`trading {' '.join(args)}` failed (exit {proc.returncode})")
    return seconds, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="a demo home to reuse (built with `trading demo` if empty)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object (lines to stderr)")
    opts = ap.parse_args()
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if opts.json else (lambda s: print(s, flush=True))
    home = opts.home or Path(tempfile.mkdtemp(prefix="bench-worker-")) / "home"
    summary: dict = {"bench": "worker", "session": SESSION, "home": str(home)}
    if not (home / "warehouse").exists():
        demo_s, _ = trading(home, "demo", off=True)
        summary["demo_s"] = round(demo_s, 2)
        say(f"`trading demo` from an empty home: {demo_s:.1f} s")

    def scans(off: bool) -> list[dict]:
        out = []
        for _ in range(opts.repeat):
            s, answer = trading(home, "scan", "--date", SESSION, off=off)
            steps = _cli.step_seconds(home, answer["run_id"])
            out.append({"wall_s": round(s, 2), "run_s": answer.get("seconds"), "steps": steps})
            say(f"  {'own process' if off else 'worker     '}: {s:.1f} s wall (run {answer.get('seconds')} s: "
                + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()) + ")")
        return out

    say(f"`trading scan --date {SESSION}`, {opts.repeat}x in its own process (TRADING_WORKER=off):")
    base = scans(off=True)
    t0 = time.perf_counter()
    start = subprocess.run([str(_cli.TRADING), "worker", "start", "--json"], env=_cli.home_env(home),
                           cwd=home.parent, capture_output=True, text=True, timeout=600)
    if start.returncode != 0:
        raise SystemExit(f"`trading worker start` failed: {start.stderr}")
    start_s = time.perf_counter() - t0
    say(f"`trading worker start`: {start_s:.1f} s (packages imported in {json.loads(start.stdout)['preload_s']} s)")
    try:
        say(f"the same scan, {opts.repeat}x through the worker:")
        warm = scans(off=False)
    finally:
        subprocess.run([str(_cli.TRADING), "worker", "stop"], env=_cli.home_env(home), cwd=home.parent,
                       capture_output=True, timeout=600)
    b = [r["wall_s"] for r in base]
    w = [r["wall_s"] for r in warm]
    summary.update(
        own_process={"min_s": min(b), "median_s": statistics.median(b), "runs": base},
        worker={"start_s": round(start_s, 2), "min_s": min(w), "median_s": statistics.median(w), "runs": warm},
        ratio_median=round(statistics.median(b) / statistics.median(w), 2),
        target_s=TARGET_S, target_met_own_process=statistics.median(b) <= TARGET_S,
        target_met_worker=statistics.median(w) <= TARGET_S,
    )
    say(f"own process: min {min(b):.1f} s, median {statistics.median(b):.1f} s; worker: min {min(w):.1f} s, "
        f"median {statistics.median(w):.1f} s ({summary['ratio_median']}x faster); target <= {TARGET_S:.0f} s: "
        f"own process {'met' if summary['target_met_own_process'] else 'NOT met'}, "
        f"worker {'met' if summary['target_met_worker'] else 'NOT met'}")
    if opts.json:
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
