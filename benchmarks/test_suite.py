"""Benchmark: how long the whole test suite (`make test`'s pytest) takes on one worker and on two.

Each run starts from an empty asset cache (a fresh ``PIPELINE_CACHE``), as on a fresh CI machine, so the
models the tests build once (the e5 rebuild and its CTranslate2 conversion, Gemma 3 270M from its
wheels, the Argos package) are part of the time. Runs in turn: pytest on one process, then
``-n 2`` (pytest-xdist, what `make test` runs). Reports the wall seconds of each, their
ratio, the test counts (a failed test fails the benchmark) and the slowest tests of each run; writes
metrics/test_suite.json and prints a table. The numbers depend on the machine and its load: the ratio
is measured in one run, and the load average before each run is recorded.
Usage: python -m benchmarks.test_suite [--workers 1,2] [--out metrics/test_suite.json]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks.translation_speed import cpu_name
from pipeline.io import write_json

ROOT = Path(__file__).resolve().parents[1]


def command(workers: int, junit: Path) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    return cmd + (["-n", str(workers)] if workers > 1 else [])


def run_suite(workers: int, slowest: int) -> dict:
    """One pytest run of the whole suite with a fresh asset cache: wall seconds, counts, slowest tests."""
    with tempfile.TemporaryDirectory(prefix="test-suite-") as tmp:
        junit = Path(tmp) / "junit.xml"
        env = {**os.environ, "PIPELINE_CACHE": str(Path(tmp) / "cache"), "HF_HUB_OFFLINE": "1",
               "HF_DATASETS_OFFLINE": "1"}
        load = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run(command(workers, junit), cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"test_suite: pytest with {workers} worker(s) failed:\n{proc.stdout[-4000:]}")
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        cases = sorted(((float(c.get("time", 0)), f"{c.get('classname')}::{c.get('name')}")
                        for c in suite.iter("testcase")), reverse=True)
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return {"workers": workers, "wall_s": round(wall, 1), "load_average_before": round(load, 2), **counts,
            "slowest": [{"test": name, "s": round(s, 1)} for s, name in cases[:slowest]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts, run in this order")
    ap.add_argument("--slowest", type=int, default=8, help="how many of the slowest tests to record per run")
    ap.add_argument("--out", default=str(ROOT / "metrics/test_suite.json"))
    args = ap.parse_args()

    runs = []
    for workers in (int(w) for w in args.workers.split(",")):
        print(f"pytest on {workers} worker(s) ...", flush=True)
        runs.append(run_suite(workers, args.slowest))
    base = runs[0]["wall_s"]
    for run in runs:
        run["speedup_vs_first"] = round(base / run["wall_s"], 2)
    write_json(Path(args.out), {"cpu": cpu_name(), "cores": os.cpu_count(), "fresh_asset_cache": True,
                                "runs": runs})
    print(f"{'workers':>7} {'wall s':>8} {'speed-up':>8} {'tests':>6} {'skipped':>7}")
    for run in runs:
        print(f"{run['workers']:>7} {run['wall_s']:>8.1f} {run['speedup_vs_first']:>7.2f}x {run['tests']:>6} "
              f"{run['skipped']:>7}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
