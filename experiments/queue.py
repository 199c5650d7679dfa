"""Running a grid through DVC's experiment queue: one ``dvc exp run --queue`` per run and seed, then
``dvc queue start`` and a wait until nothing is queued or running.

Each experiment runs the same ``dvc.yaml`` with validated params (:func:`experiments.grids.params_for`) in
DVC's temporary copy of the workspace; params.yaml is left as committed.
"""
from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pipeline.reproducibility import machine

from . import grids, staleness
from .grids import DEFAULT_SET, ROOT


def dvc(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    """``python -m dvc ARGS`` in the repository, with this interpreter."""
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ROOT, check=check, capture_output=capture,
                          text=True)


# What the stages' commands import first; enough to tell the project's environment from a bare Python.
STAGE_IMPORTS = "import pandas, pyarrow, torch, ctranslate2, pipeline"


def check_stage_python() -> None:
    """Exit before anything is queued when the ``python`` of the stages' commands (``python -m
    pipeline.stages...``, the first on PATH) cannot import the pipeline's packages as seen from another
    directory, as it is from DVC's temporary copy of the workspace. A relative PATH entry such as
    ``.venv/bin`` resolves here but not there, and every experiment of the grid would fail within seconds."""
    try:
        probe = subprocess.run(["python", "-c", STAGE_IMPORTS], cwd=tempfile.gettempdir(), capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        problem = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1] if probe.returncode else ""
    except FileNotFoundError:
        problem = "no `python` on PATH"
    if problem:
        raise SystemExit(f"the stages run `python -m pipeline.stages...` in DVC's copy of the workspace, and the "
                         f"`python` on PATH there fails: {problem}. Activate the project's environment or put its "
                         f"bin folder on PATH as an absolute path (PATH={os.environ.get('PATH', '')})")


def live_stages(lock: dict, pipeline: dict) -> dict:
    """The entries of ``lock`` (a parsed dvc.lock) of stages that ``pipeline`` (the parsed dvc.yaml) defines:
    ``name``, or ``name@item`` for a ``foreach`` stage; an entry left from a stage since removed or turned
    into a ``foreach`` is not one."""
    defined = pipeline.get("stages") or {}

    def live(name: str) -> bool:
        base, at, _ = name.partition("@")
        return base in defined and bool(at) == ("foreach" in (defined[base] or {}))
    return {n: st for n, st in (lock.get("stages") or {}).items() if live(n)}


def missing_read_dirs(lock: dict, pipeline: dict, cache: Path) -> dict[str, str]:
    """Directory outputs of ``lock`` (a parsed dvc.lock; its stages that ``pipeline``, the parsed dvc.yaml,
    defines) that another stage reads a file of (split reads ``data/filtered/pairs.parquet``) and whose
    listing (``<md5>.dir``) is not in the DVC cache ``cache``: output path -> the stage that makes it."""
    stages = live_stages(lock, pipeline)
    dirs = {o["path"]: (name, o["md5"]) for name, st in stages.items() for o in st.get("outs") or []
            if str(o.get("md5", "")).endswith(".dir")}
    missing = {}
    for st in stages.values():
        for dep in st.get("deps") or []:
            for path, (name, md5) in dirs.items():
                if dep["path"].startswith(path + "/") and not (cache / "files" / "md5" / md5[:2] / md5[2:]).exists():
                    missing[path] = name
    return missing


def cache_dir(root: Path = ROOT) -> Path:
    """DVC's cache folder: ``cache.dir`` of ``.dvc/config.local`` or ``.dvc/config`` (relative to ``.dvc``),
    else ``.dvc/cache``."""
    for name in ("config.local", "config"):
        config = configparser.ConfigParser()
        config.read(root / ".dvc" / name)
        if config.has_option("cache", "dir"):
            return (root / ".dvc" / config.get("cache", "dir")).resolve()
    return root / ".dvc" / "cache"


def check_committed_outputs() -> None:
    """Exit before anything is queued when DVC's cache lacks a committed directory output that a later stage
    reads a file of (a fresh clone before ``make repro``). A queued experiment restores such a stage from
    DVC's run cache and then fails at the next one ('failed to load directory ... .dir'): DVC looks the
    file up in the committed listing, which is not there."""
    lock = staleness.read_lock() if (ROOT / "dvc.lock").exists() else {}
    missing = missing_read_dirs(lock, yaml.safe_load((ROOT / "dvc.yaml").read_text()), cache_dir())
    if missing:
        stages = " ".join(dict.fromkeys(missing.values()))
        raise SystemExit(f"DVC's cache lacks the committed {', '.join(missing)} ({stages}), which later stages read "
                         f"files of: queued experiments restored from the run cache would fail on them. Run "
                         f"`dvc repro {stages}` (or `make repro`) first")


def queue(grid: str, seeds: list[int], run_set_name: str = DEFAULT_SET, only=None) -> list[str]:
    """Queue the grid's experiments of a run set (``only``: some of its runs); params.yaml is left as committed.
    Checks first that the stages' ``python`` has the pipeline's packages (:func:`check_stage_python`) and that
    DVC's cache holds what the experiments will look up (:func:`check_committed_outputs`)."""
    check_stage_python()
    check_committed_outputs()
    if subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "params.yaml"], cwd=ROOT).returncode:
        raise SystemExit("params.yaml differs from HEAD: commit or stash it first (the grid starts from HEAD)")
    plan = grids.planned(grid, seeds, run_set_name, only)
    for run, seed in plan:
        grids.params_for(grid, run, seed, run_set_name=run_set_name)  # fail on a bad override before queueing
    names = []
    for run, seed in plan:
        name = grids.run_name(grid, run, seed)
        dvc("exp", "remove", name, check=False, capture=True)
        sets = [a for o in grids.overrides(grid, run, seed, run_set_name) for a in ("-S", o)]
        dvc("exp", "run", "--queue", "-n", name, *sets)
        subprocess.run(["git", "checkout", "HEAD", "--", "params.yaml"], cwd=ROOT, check=True)
        names.append(name)
    return names


def wait_for_queue(poll_s: float = 20.0) -> None:
    """Until DVC's queue holds nothing queued or running; exits naming the failed experiments, if any."""
    while True:
        status = dvc("queue", "status", capture=True).stdout
        active = [line for line in status.splitlines() if " Queued " in f" {line} " or " Running " in f" {line} "]
        if not active:
            print(status, flush=True)
            failed = [line for line in status.splitlines() if "Failed" in line]
            if failed:
                raise SystemExit("failed experiments (see `dvc queue logs NAME`):\n" + "\n".join(failed))
            return
        print(f"{time.strftime('%H:%M:%S')} {len(active)} experiment(s) queued or running", flush=True)
        time.sleep(poll_s)


def run_queued(grid: str, names: list[str], jobs: int, run_set_name: str = DEFAULT_SET) -> None:
    """Start DVC's queue (``jobs`` experiments at a time), wait for it, and record the wall time of the queued
    ``names`` in ``wall.json`` of :func:`experiments.grids.out_dir`."""
    t0 = time.perf_counter()
    dvc("queue", "start", "-j", str(jobs))
    wait_for_queue()
    minutes = round((time.perf_counter() - t0) / 60, 1)
    print(f"grid {grid}: {len(names)} experiments in {minutes} min", flush=True)
    out = grids.out_dir(grid, run_set_name)
    out.mkdir(parents=True, exist_ok=True)
    where = {k: v for k, v in machine().items() if k in ("cpu", "cores", "isa_flags")}
    (out / "wall.json").write_text(json.dumps({"experiments": len(names), "parallel_experiments": jobs,
                                               "wall_min": minutes, "machine": where}, indent=2) + "\n")
