"""The strategy comparison as DVC experiments: the runs of a run set x seeds, for one fold at one scale.

    python -m scripts.compare_strategies run --grid mlqa2xquad-cpu --seeds 13 14 15   # queue, run, collect, report
    python -m scripts.compare_strategies collect --grid mlqa2xquad-cpu                # experiments -> metrics/grids/
    python -m scripts.compare_strategies report --grid mlqa2xquad-cpu                 # summary, intervals, verdicts
    python -m scripts.compare_strategies run --grid mlqa2xquad-cpu --runs hardneg     # another run set
    python -m scripts.compare_strategies queue --grid mlqa2xquad-cpu --runs hardneg --only hybrid-hn-query

A grid is ``<fold>-<scale>`` from ``scripts/grids.yaml``; a run set (``--runs``, its ``run_sets``) names the
runs (overrides after the fold and scale) and the compared pairs. The default set, ``strategies``, is the
paper's comparison: its files go to ``metrics/grids/<grid>/`` with ``verdicts.csv``; any other set's go to
``metrics/grids/<grid>/<set>/`` with ``findings.csv`` instead (:func:`pipeline.comparison.findings`).
Experiment names are ``<grid>-<run>-s<seed>`` in every set. ``run`` queues one experiment per run
(``--only``: some of them) and seed (``dvc exp run --queue -n <grid>-<run>-s<seed> -S ...``; the
untrained baseline once), starts DVC's queue (``dvc queue start -j JOBS``) and waits for it. Each
experiment runs the same ``dvc.yaml`` with validated params in DVC's temporary copy of the workspace.
``collect`` reads every experiment of the grid and run set back from DVC (``dvc exp show --json`` for
params and metrics, the per-query scores from DVC's cache through the experiment's dvc.lock) into
``runs.csv`` and ``per-query.parquet``. ``report`` writes ``summary.csv`` (mean and sd over seeds),
``intervals.csv`` (seed-and-question bootstrap, :mod:`pipeline.comparison`) and ``verdicts.csv`` (one
line per claim of the paper) or ``findings.csv``.

GPU grids (``*-gpu``) run on a lent GPU machine, where there is no DVC: ``scripts.gpu_bundle``
carries the same stage modules with the params files DVC would have made; its results are read by
``collect --from DIR``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from pipeline.comparison import (
    findings,
    parse_run_name,
    run_name,
    seed_question_bootstrap,
    summary_table,
    verdicts,
)
from pipeline.io import write_csv, write_parquet
from pipeline.metrics import headline_metrics, metric_source

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ROOT / "scripts" / "grids.yaml"
OUT = ROOT / "metrics" / "grids"
# per-query columns kept for the intervals (the rest can be recomputed from the embeddings): these and the
# columns of the headline metrics (the recall cut-offs come from the grid's score.recall_at)
KEY_COLUMNS = ["qid", "query_lang", "setting", "pool_lang"]
TRAIN_COLUMNS = ["select_by", "best_step", "steps_run", "stopped_early", "dev_score"]
DEFAULT_SET = "strategies"  # the paper's comparison: its files are metrics/grids/<grid>/*, with the verdicts


def run_set(name: str = DEFAULT_SET) -> dict:
    """Run set ``name`` of ``scripts/grids.yaml``: ``runs`` (run -> overrides, in order), ``comparisons``
    (``(a, b)`` pairs, difference ``b - a``) and ``record`` (params kept as runs.csv columns).

    Experiment names do not name the set, so a run name in two sets must have the same overrides there."""
    sets = yaml.safe_load(GRIDS.read_text())["run_sets"]
    if name not in sets:
        raise SystemExit(f"unknown run set {name!r}; run sets: {sorted(sets)}")
    runs = sets[name]["runs"]
    comparisons = [tuple(c) for c in sets[name].get("comparisons", [])]
    for c in comparisons:
        if len(c) != 2 or not set(c) <= set(runs):
            raise SystemExit(f"run set {name}: comparison {list(c)} is not two of its runs {list(runs)}")
    for other, spec in sets.items():
        for run in set(runs) & set(spec["runs"]):
            if spec["runs"][run] != runs[run]:
                raise SystemExit(f"run {run!r} has other overrides in run sets {name} and {other}: its experiments "
                                 f"<grid>-{run}-s<seed> would be two different things")
    return {"name": name, "runs": runs, "comparisons": comparisons, "record": list(sets[name].get("record", []))}


def grid_spec(grid: str, run_set_name: str = DEFAULT_SET) -> dict:
    """The fold, scale and overrides of ``grid`` (``<fold>-<scale>``) with the runs, comparisons and recorded
    params of run set ``run_set_name``."""
    spec = yaml.safe_load(GRIDS.read_text())
    fold, _, scale = grid.rpartition("-")
    if fold not in spec["folds"] or scale not in spec["scales"]:
        raise SystemExit(f"unknown grid {grid!r}; folds: {sorted(spec['folds'])}, scales: {sorted(spec['scales'])}")
    rs = run_set(run_set_name)
    return {"fold": fold, "scale": scale, "overrides": spec["folds"][fold] + spec["scales"][scale],
            "runs": rs["runs"], "comparisons": rs["comparisons"], "record": rs["record"], "run_set": rs["name"]}


def out_dir(grid: str, run_set_name: str = DEFAULT_SET) -> Path:
    """``metrics/grids/<grid>/`` for the default set, ``metrics/grids/<grid>/<set>/`` for any other."""
    return OUT / grid if run_set_name == DEFAULT_SET else OUT / grid / run_set_name


def overrides(grid: str, run: str, seed: int, run_set_name: str = DEFAULT_SET) -> list[str]:
    """The ``-S`` overrides of one experiment, applied in this order: fold, scale, run, seed."""
    spec = grid_spec(grid, run_set_name)
    if run not in spec["runs"]:
        raise SystemExit(f"run set {run_set_name} has no run {run!r}; its runs: {list(spec['runs'])}")
    return spec["overrides"] + spec["runs"][run] + [f"seed={seed}"]


def params_for(grid: str, run: str, seed: int, base: Path = ROOT / "params.yaml",
               run_set_name: str = DEFAULT_SET) -> dict:
    """The params DVC runs an experiment with: ``base`` with the overrides applied as ``dvc exp run -S`` does."""
    import shutil
    import tempfile

    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    from pipeline.params import parse_params

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        shutil.copy(base, path)
        try:
            apply_overrides(str(path), overrides(grid, run, seed, run_set_name))
        except InvalidArgumentError as e:  # a key params.yaml lacks: one line naming it, not DVC's traceback
            cause = str(e.__cause__ or e).splitlines()[0]
            raise SystemExit(f"{grid}/{run}/s{seed} (run set {run_set_name}): {cause} in {base}") from e
        data = yaml.safe_load(path.read_text())
    parse_params(data, f"{grid}/{run}/s{seed}")  # validated here, before anything is queued
    return data


def dataset_of(grid: str) -> tuple[str, list[str]]:
    p = params_for(grid, "hybrid", 0)
    unseen = set(p["score"]["unseen_languages"])
    for name in p["index"]["datasets"]:
        unseen |= set(p["datasets"][name]["languages"]) - set(p["languages"])
    return p["index"]["datasets"][0], sorted(unseen)


def headline_of(grid: str) -> tuple[str, ...]:
    """The grid's headline metric keys (its ``score.recall_at`` names the recall ones)."""
    return headline_metrics(params_for(grid, "hybrid", 0)["score"]["recall_at"])


def per_query_columns(headline) -> list[str]:
    return KEY_COLUMNS + list(dict.fromkeys(metric_source(m)[1] for m in headline))


def _dvc(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ROOT, check=check, capture_output=capture,
                          text=True)


def planned(grid: str, seeds: list[int], run_set_name: str = DEFAULT_SET, only=None) -> list[tuple[str, int]]:
    """``(run, seed)`` of every experiment to queue, run by run in the set's order (``only``: just these
    runs); the untrained run once, with the first seed."""
    runs = list(grid_spec(grid, run_set_name)["runs"])
    unknown = sorted(set(only or ()) - set(runs))
    if unknown:
        raise SystemExit(f"--only {' '.join(unknown)}: not in run set {run_set_name} ({' '.join(runs)})")
    return [(run, seed) for run in runs if only is None or run in only
            for seed in (seeds[:1] if run == "untrained" else seeds)]


def queue(grid: str, seeds: list[int], run_set_name: str = DEFAULT_SET, only=None) -> list[str]:
    """Queue the grid's experiments of a run set (``only``: some of its runs); params.yaml is left as committed."""
    if subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "params.yaml"], cwd=ROOT).returncode:
        raise SystemExit("params.yaml differs from HEAD: commit or stash it first (the grid starts from HEAD)")
    plan = planned(grid, seeds, run_set_name, only)
    for run, seed in plan:
        params_for(grid, run, seed, run_set_name=run_set_name)  # fail on a bad override before queueing anything
    names = []
    for run, seed in plan:
        name = run_name(grid, run, seed)
        _dvc("exp", "remove", name, check=False, capture=True)
        sets = [a for o in overrides(grid, run, seed, run_set_name) for a in ("-S", o)]
        _dvc("exp", "run", "--queue", "-n", name, *sets)
        subprocess.run(["git", "checkout", "HEAD", "--", "params.yaml"], cwd=ROOT, check=True)
        names.append(name)
    return names


def wait_for_queue(poll_s: float = 20.0) -> None:
    while True:
        status = _dvc("queue", "status", capture=True).stdout
        active = [line for line in status.splitlines() if " Queued " in f" {line} " or " Running " in f" {line} "]
        if not active:
            print(status, flush=True)
            failed = [line for line in status.splitlines() if "Failed" in line]
            if failed:
                raise SystemExit("failed experiments (see `dvc queue logs NAME`):\n" + "\n".join(failed))
            return
        print(f"{time.strftime('%H:%M:%S')} {len(active)} experiment(s) queued or running", flush=True)
        time.sleep(poll_s)


def _experiments() -> dict[str, dict]:
    """Experiment name -> ``{rev, params, metrics}`` of every finished experiment DVC knows in this repository."""
    shown = json.loads(_dvc("exp", "show", "--json", "--all-commits", capture=True).stdout)
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            rev = (exp.get("revs") or [{}])[0]
            data = rev.get("data") or {}
            state = (exp.get("executor") or {}).get("state", "success")  # no executor: a finished workspace run
            if exp.get("name") and data and state == "success":
                found[exp["name"]] = {"rev": rev.get("rev"), "params": data["params"]["params.yaml"]["data"],
                                      "metrics": {k: v.get("data", {}) for k, v in data.get("metrics", {}).items()}}
    return found


def param_at(params: dict, key: str):
    """The value of the dotted ``key`` in ``params``, None where it is absent."""
    for part in key.split("."):
        if not isinstance(params, dict) or part not in params:
            return None
        params = params[part]
    return params


def run_record(run: str, seed: int, params: dict, train: dict, scores: dict, headline, record=()) -> dict:
    """One row of ``runs.csv``: who the run is (and the params ``record`` names), the kept step and rule, and
    the ``headline`` metrics."""
    mode = params["sampling"]["mode"] if run != "untrained" else "none"
    row = {"run": run, "seed": seed, "mode": mode, "alpha": params["sampling"]["alpha"] if mode == "hybrid" else None}
    row.update({k: param_at(params, k) for k in record})
    row.update({k: train.get(k) for k in TRAIN_COLUMNS})
    row.update({k: scores.get(k) for k in headline})
    for group in ("seen", "unseen"):
        for k in ("mono_map", "cross_map", "multi_map", "multi_rank_distance"):
            row[f"{k}_{group}"] = scores.get(f"{k}_{group}")
    return row


def save(grid: str, rows: list[dict], per_query: list[pd.DataFrame], device: str,
         run_set_name: str = DEFAULT_SET) -> Path:
    out = out_dir(grid, run_set_name)
    order = list(run_set(run_set_name)["runs"])
    runs = pd.DataFrame(rows).sort_values(["run", "seed"], key=lambda c: c.map(order.index) if c.name == "run" else c)
    runs.insert(2, "device", device)
    write_csv(out / "runs.csv", runs)
    pq = pd.concat(per_query, ignore_index=True)
    for c in ("run", "qid", "query_lang", "setting", "pool_lang"):
        pq[c] = pq[c].astype("category")
    write_parquet(out / "per-query.parquet", pq)
    print(f"{len(rows)} runs of {grid} ({run_set_name}) -> {out}")
    return out


def cached_output_file(rev: str, out: str, name: str) -> Path:
    """The cache path of file ``name`` inside the directory output ``out`` of the commit ``rev``
    (an experiment's commit): its dvc.lock gives the directory's ``.dir`` listing, which gives the file's md5."""
    lock = yaml.safe_load(subprocess.run(["git", "show", f"{rev}:dvc.lock"], cwd=ROOT, check=True,
                                         capture_output=True, text=True).stdout)
    cache = ROOT / ".dvc" / "cache" / "files" / "md5"
    for stage in lock["stages"].values():
        for o in stage.get("outs", []):
            if o["path"] == out:
                listing = json.loads((cache / o["md5"][:2] / o["md5"][2:]).read_text())
                md5 = next(e["md5"] for e in listing if e["relpath"] == name)
                return cache / md5[:2] / md5[2:]
    raise SystemExit(f"{rev}: dvc.lock has no output {out}")


def collect(grid: str, run_set_name: str = DEFAULT_SET) -> Path:
    """The grid's DVC experiments of a run set -> :func:`out_dir` (runs.csv, per-query.parquet)."""
    dataset, _ = dataset_of(grid)
    headline = headline_of(grid)
    spec = run_set(run_set_name)
    rows, per_query = [], []
    for name, exp in sorted(_experiments().items()):
        parsed = parse_run_name(name, grid, spec["runs"])
        if parsed is None:
            continue
        run, seed = parsed
        m = exp["metrics"]
        if f"metrics/{dataset}.json" not in m:
            print(f"skipping {name}: no metrics/{dataset}.json (queued, running or failed)")
            continue
        rows.append(run_record(run, seed, exp["params"], m.get("metrics/train.json", {}),
                               m.get(f"metrics/{dataset}.json", {}), headline, spec["record"]))
        path = cached_output_file(exp["rev"], f"data/scores/{dataset}", "per_query.parquet")
        per_query.append(pd.read_parquet(path)[per_query_columns(headline)].assign(run=run, seed=seed))
    if not rows:
        raise SystemExit(f"no experiments named {grid}-<run>-s<seed> of run set {run_set_name}; run "
                         f"`... run --grid {grid} --runs {run_set_name}` first")
    device = "cpu" if grid.endswith("-cpu") else "see runs"
    return save(grid, rows, per_query, device, run_set_name)


def collect_folder(grid: str, folder: Path, device: str, run_set_name: str = DEFAULT_SET) -> Path:
    """Results of :mod:`scripts.gpu_bundle` (one folder per run: params.yaml, train.json, <dataset>.json,
    per_query.parquet) -> the same files as :func:`collect`."""
    dataset, _ = dataset_of(grid)
    headline = headline_of(grid)
    spec = run_set(run_set_name)
    rows, per_query = [], []
    for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        parsed = parse_run_name(run_dir.name, grid, spec["runs"])
        if parsed is None:
            continue
        run, seed = parsed
        rows.append(run_record(run, seed, yaml.safe_load((run_dir / "params.yaml").read_text()),
                               json.loads((run_dir / "train.json").read_text()),
                               json.loads((run_dir / f"{dataset}.json").read_text()), headline, spec["record"]))
        per_query.append(pd.read_parquet(run_dir / "per_query.parquet")[per_query_columns(headline)]
                         .assign(run=run, seed=seed))
    return save(grid, rows, per_query, device, run_set_name)


def report(grid: str, run_set_name: str = DEFAULT_SET) -> None:
    """summary.csv, intervals.csv and, for the default set, verdicts.csv (the paper's claims), for any other
    findings.csv, from the runs.csv and per-query.parquet of :func:`out_dir`."""
    out = out_dir(grid, run_set_name)
    spec = run_set(run_set_name)
    runs = pd.read_csv(out / "runs.csv")
    pq = pd.read_parquet(out / "per-query.parquet")
    for c in pq.columns:
        if isinstance(pq[c].dtype, pd.CategoricalDtype):
            pq[c] = pq[c].astype(str)
    _, unseen = dataset_of(grid)
    headline = headline_of(grid)
    metrics = list(headline) + [f"{m}_{g}" for g in ("seen", "unseen") for m in
                                ("mono_map", "cross_map", "multi_map", "multi_rank_distance")]
    write_csv(out / "summary.csv", summary_table(runs, [m for m in metrics if m in runs and runs[m].notna().any()],
                                                 order=list(spec["runs"])))
    tables = {run: [g.drop(columns=["run", "seed"]) for _, g in pq[pq["run"] == run].groupby("seed", sort=True)]
              for run in spec["runs"] if run in set(pq["run"])}
    boot_metrics = list(headline)
    if unseen:
        boot_metrics += ["multi_map_unseen", "multi_map_seen"]
    parts = []
    for a, b in spec["comparisons"]:
        if a in tables and b in tables:
            res = seed_question_bootstrap(tables[a], tables[b], boot_metrics, frozenset(unseen))
            parts.append(res.assign(a_run=a, b_run=b))
    if not parts:
        raise SystemExit(f"{out}: no pair of run set {run_set_name} has both runs collected")
    intervals = pd.concat(parts, ignore_index=True)[["a_run", "b_run", "metric", "seeds_a", "seeds_b", "a", "b",
                                                     "diff", "low", "high", "p_le_0"]]
    write_csv(out / "intervals.csv", intervals)
    if run_set_name == DEFAULT_SET:
        v = pd.DataFrame(verdicts(intervals, bool(unseen)))
        write_csv(out / "verdicts.csv", v)
    else:
        v = findings(intervals)
        write_csv(out / "findings.csv", v)
    print(v.to_string(index=False))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["run", "queue", "collect", "report"])
    ap.add_argument("--grid", required=True, help="<fold>-<scale> of scripts/grids.yaml, e.g. mlqa2xquad-cpu")
    ap.add_argument("--runs", dest="run_set", default=DEFAULT_SET,
                    help="run set of scripts/grids.yaml (run_sets), e.g. hardneg; default: %(default)s")
    ap.add_argument("--only", nargs="+", metavar="RUN", help="run/queue: just these runs of the set")
    ap.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    ap.add_argument("-j", "--jobs", type=int, default=1, help="dvc queue start -j (parallel experiments)")
    ap.add_argument("--from", dest="folder", help="collect: a results folder of scripts.gpu_bundle instead of DVC")
    ap.add_argument("--device", default="", help="collect --from: the device the results came from")
    args = ap.parse_args(argv)
    if args.only and args.action not in ("run", "queue"):
        ap.error("--only chooses runs to queue: use it with run or queue")
    grid_spec(args.grid, args.run_set)
    out = out_dir(args.grid, args.run_set)
    if args.action in ("run", "queue"):
        names = queue(args.grid, args.seeds, args.run_set, args.only)
        print(f"queued {len(names)}: {' '.join(names)}")
        if args.action == "queue":
            return
        t0 = time.perf_counter()
        _dvc("queue", "start", "-j", str(args.jobs))
        wait_for_queue()
        minutes = round((time.perf_counter() - t0) / 60, 1)
        print(f"grid {args.grid}: {len(names)} experiments in {minutes} min", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "wall.json").write_text(json.dumps({"experiments": len(names), "parallel_experiments":
                                                               args.jobs, "wall_min": minutes}, indent=2) + "\n")
    if args.action in ("run", "collect"):
        if args.folder:
            collect_folder(args.grid, Path(args.folder), args.device, args.run_set)
        else:
            collect(args.grid, args.run_set)
    report(args.grid, args.run_set)


if __name__ == "__main__":
    main()
