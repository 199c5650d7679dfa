"""Collecting a grid's finished experiments into ``metrics/grids/<grid>/`` (``<grid>/<set>/`` for a run set
other than the default): ``runs.csv`` (one row per run and seed) and ``per-query.parquet``.

:func:`collect` reads them from DVC (``dvc exp show --json`` of the experiments' baselines for params and
metrics, the per-query scores and the batches' statistics from DVC's cache through the experiment's dvc.lock);
:func:`collect_folder` from a results folder of :mod:`experiments.gpu` (a lent GPU machine has no DVC). Both
write ``code.json``: the code and params the runs used (:mod:`experiments.staleness`), from each experiment's
dvc.lock and the commit it started from.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from pipeline.io import write_csv, write_parquet
from pipeline.metrics import metric_source
from pipeline.reproducibility import machine

from . import grids, staleness
from .grids import DEFAULT_SET, ROOT, param_at, parse_run_name
from .queue import dvc

# per-query columns kept for the intervals (the rest can be recomputed from the embeddings): these and the
# columns of the headline metrics (the recall cut-offs come from the grid's score.recall_at)
KEY_COLUMNS = ["qid", "query_lang", "setting", "pool_lang"]
TRAIN_COLUMNS = ["select_by", "best_step", "steps_run", "stopped_early", "dev_score"]


def per_query_columns(headline) -> list[str]:
    return KEY_COLUMNS + list(dict.fromkeys(metric_source(m)[1] for m in headline))


def baselines() -> list[str]:
    """The commits DVC's experiments in this repository started from: ``dvc exp list --all-commits`` writes
    each as a line of its own ending in ':', its experiments indented below it."""
    listed = dvc("exp", "list", "--all-commits", capture=True).stdout
    return [line[:-1] for line in listed.splitlines() if line.endswith(":") and not line[:1].isspace()]


def experiments() -> dict[str, dict]:
    """Experiment name -> ``{rev, params, metrics}`` of every finished experiment DVC knows in this repository.
    ``dvc exp show`` reads params and metrics of only the baselines that have experiments (``--rev`` each,
    ``-n 1``), not of every commit in the history as ``--all-commits`` would (seconds instead of minutes)."""
    revs = baselines()
    if not revs:
        return {}
    shown = json.loads(dvc("exp", "show", "--json", "-n", "1", *(a for r in revs for a in ("--rev", r)),
                           capture=True).stdout)
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


def training_mix(data: dict, stats: dict) -> dict:
    """What a run trained on, beside its scores: the machine-translated pairs the filter kept
    (``metrics/data.json``), the training pairs after the dev hold-out and the question ids its batches drew
    (``data/batches/stats.json``), and the two languages that make up most cross-lingual rows with their share
    (an ordered pair and its reverse counted together). At a fixed number of steps more data changes what the
    batches hold, not how many pairs they hold: these columns show how."""
    mt_kept = 0
    for lang in (data.get("languages") or {}).values():
        parts = lang.get("by_system") or {lang.get("system", ""): lang}
        mt_kept += sum(p.get("kept", 0) for system, p in parts.items() if system.startswith("ctranslate2"))
    cross: dict[str, int] = {}
    for key, n in stats.items():
        if key.startswith("train_lang_pair_"):
            query, passage = key.removeprefix("train_lang_pair_").split("_")
            if query != passage:
                pair = "-".join(sorted((query, passage)))
                cross[pair] = cross.get(pair, 0) + n
    rows = sum(cross.values())
    top = max(sorted(cross), key=cross.get) if rows else None
    return {"mt_kept": mt_kept, "train_pairs": stats.get("pairs_in"), "train_pair_ids": stats.get("train_pair_ids"),
            "xy_rows": rows, "xy_top_pair": top, "xy_top_pair_share": round(cross[top] / rows, 4) if top else None}


def collected(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict] | None:
    """The runs already in ``out`` (runs.csv, per-query.parquet, code.json), or None where there are none. Each
    run must have its code identity in code.json: a run of unknown code cannot be kept beside new ones."""
    if not (out / "runs.csv").exists():
        return None
    runs = pd.read_csv(out / "runs.csv")
    code_path = out / staleness.CODE_FILE
    code = json.loads(code_path.read_text()) if code_path.exists() else {}
    known = {r for ident in code.get("identities") or [] for r in ident.get("runs") or []}
    unknown = sorted({f"{r}-s{s}" for r, s in zip(runs["run"], runs["seed"], strict=True)} - known)
    if unknown:
        raise SystemExit(f"{out / 'runs.csv'}: runs {', '.join(unknown)} have no code identity in {code_path}; "
                         "collect without --add to replace them")
    return runs, pd.read_parquet(out / "per-query.parquet"), code


def save(grid: str, rows: list[dict], per_query: list[pd.DataFrame], device: str,
         run_set_name: str = DEFAULT_SET, code: list[tuple[str, str, dict]] = (), add: bool = False,
         machine: str = "") -> Path:
    """``runs.csv`` (rows in the set's run order, then by seed, with ``device`` and ``machine``),
    ``per-query.parquet`` and ``code.json`` of ``code`` (``(run, commit, dvc.lock, overridden keys)`` per run,
    :func:`experiments.staleness.write`). ``add``: keep the runs already collected in the folder (another
    machine's, or an earlier clone's: DVC keeps experiments in one repository only), those collected again
    replaced by the new ones."""
    out = grids.out_dir(grid, run_set_name)
    out.mkdir(parents=True, exist_ok=True)
    order = list(grids.run_set(run_set_name)["runs"])
    runs = pd.DataFrame(rows)
    runs.insert(2, "device", device)
    runs.insert(3, "machine", machine or device)
    pq = pd.concat(per_query, ignore_index=True)
    before = collected(out) if add else None
    if before is not None:
        old_runs, old_pq, old_code = before
        new = set(zip(runs["run"], runs["seed"], strict=True))
        keep = [(r, s) not in new for r, s in zip(old_runs["run"], old_runs["seed"], strict=True)]
        runs = pd.concat([old_runs[keep], runs], ignore_index=True)
        old_pq = old_pq.astype({c: str for c in ("run", "qid", "query_lang", "setting", "pool_lang")})
        keep_q = [(r, s) not in new for r, s in zip(old_pq["run"], old_pq["seed"], strict=True)]
        pq = pd.concat([old_pq[keep_q], pq], ignore_index=True)
    if code:
        staleness.write(out, list(code), before[2] if before is not None else None)
    runs = runs.sort_values(["run", "seed"], key=lambda c: c.map(order.index) if c.name == "run" else c,
                            kind="stable")
    write_csv(out / "runs.csv", runs)
    for c in ("run", "qid", "query_lang", "setting", "pool_lang"):
        pq[c] = pq[c].astype(str).astype("category")
    write_parquet(out / "per-query.parquet", pq)
    kept = len(runs) - len(rows)
    print(f"{len(rows)} runs of {grid} ({run_set_name}){f' added to {kept} collected before' if kept else ''} -> {out}")
    return out


def cached_output_file(rev: str, out: str, name: str) -> Path:
    """The cache path of file ``name`` inside the directory output ``out`` of the commit ``rev``
    (an experiment's commit): its dvc.lock gives the directory's ``.dir`` listing, which gives the file's md5."""
    lock = staleness.lock_at(rev)
    cache = ROOT / ".dvc" / "cache" / "files" / "md5"
    for stage in lock["stages"].values():
        for o in stage.get("outs", []):
            if o["path"] == out:
                listing = json.loads((cache / o["md5"][:2] / o["md5"][2:]).read_text())
                md5 = next(e["md5"] for e in listing if e["relpath"] == name)
                return cache / md5[:2] / md5[2:]
    raise SystemExit(f"{rev}: dvc.lock has no output {out}")


def _with_seeds(seeds) -> str:
    """' with seed 13 or 14' for a message about ``--seeds``, '' without."""
    return "" if seeds is None else f" with seed {' or '.join(map(str, sorted(seeds)))}"


def collect(grid: str, run_set_name: str = DEFAULT_SET, add: bool = False, seeds=None) -> Path:
    """The grid's DVC experiments of a run set -> :func:`experiments.grids.out_dir` (runs.csv, per-query.parquet);
    ``add``: beside the runs collected there before (:func:`save`); ``seeds``: only these seeds' experiments
    (a seed finished by every run, while the next one is still running)."""
    dataset, _ = grids.dataset_of(grid)
    headline = grids.headline_of(grid)
    spec = grids.run_set(run_set_name)
    rows, per_query, code = [], [], []
    for name, exp in sorted(experiments().items()):
        parsed = parse_run_name(name, grid, spec["runs"])
        if parsed is None:
            continue
        run, seed = parsed
        if seeds is not None and seed not in seeds:
            continue
        m = exp["metrics"]
        if f"metrics/{dataset}.json" not in m:
            print(f"skipping {name}: no metrics/{dataset}.json (queued, running or failed)")
            continue
        stats = json.loads(cached_output_file(exp["rev"], "data/batches", "stats.json").read_text())
        rows.append(run_record(run, seed, exp["params"], m.get("metrics/train.json", {}),
                               m.get(f"metrics/{dataset}.json", {}), headline, spec["record"])
                    | training_mix(m.get("metrics/data.json", {}), stats))
        path = cached_output_file(exp["rev"], f"data/scores/{dataset}", "per_query.parquet")
        per_query.append(pd.read_parquet(path)[per_query_columns(headline)].assign(run=run, seed=seed))
        # the experiment's commit sits on the commit it was queued from: that one names the code
        code.append((f"{run}-s{seed}", staleness.commit_of(f"{exp['rev']}^"), staleness.lock_at(exp["rev"]),
                     staleness.override_keys(grids.overrides(grid, run, seed, run_set_name))))
    if not rows:
        raise SystemExit(f"no finished experiments named {grid}-<run>-s<seed> of run set {run_set_name}"
                         f"{_with_seeds(seeds)}; run `... run --grid {grid} --runs {run_set_name}` first")
    device = "cpu" if grid.endswith("-cpu") else "see runs"
    # DVC's experiments ran on this machine
    return save(grid, rows, per_query, device, run_set_name, code, add, machine()["cpu"])


def collect_folder(grid: str, folder: Path, device: str, run_set_name: str = DEFAULT_SET, add: bool = False,
                   seeds=None) -> Path:
    """Results of :mod:`experiments.gpu` (one folder per run: params.yaml, train.json, <dataset>.json,
    per_query.parquet) -> the same files as :func:`collect`. The code identity is a run folder's own
    ``dvc.lock`` where it has one, else the folder's, else the workspace's (the bundle carried the
    workspace's code), with the commit of HEAD."""
    dataset, _ = grids.dataset_of(grid)
    headline = grids.headline_of(grid)
    spec = grids.run_set(run_set_name)
    rows, per_query, code = [], [], []
    commit = staleness.commit_of("HEAD")
    for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        parsed = parse_run_name(run_dir.name, grid, spec["runs"])
        if parsed is None:
            continue
        run, seed = parsed
        if seeds is not None and seed not in seeds:
            continue
        rows.append(run_record(run, seed, yaml.safe_load((run_dir / "params.yaml").read_text()),
                               json.loads((run_dir / "train.json").read_text()),
                               json.loads((run_dir / f"{dataset}.json").read_text()), headline, spec["record"]))
        per_query.append(pd.read_parquet(run_dir / "per_query.parquet")[per_query_columns(headline)]
                         .assign(run=run, seed=seed))
        lock = next(p for p in (run_dir / "dvc.lock", folder / "dvc.lock", ROOT / "dvc.lock") if p.exists())
        code.append((f"{run}-s{seed}", commit, staleness.read_lock(lock),
                     staleness.override_keys(grids.overrides(grid, run, seed, run_set_name))))
    if not rows:
        raise SystemExit(f"{folder}: no run folders named {grid}-<run>-s<seed> of run set {run_set_name}"
                         f"{_with_seeds(seeds)}")
    return save(grid, rows, per_query, device, run_set_name, code, add)
