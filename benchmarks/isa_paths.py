"""Benchmark: do training and encoding give the same bytes on every instruction-set path, and at what cost?

One machine stands in for several CPU kinds by forcing the libraries' kernel choice through their
environment switches (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, ``MKL_CBWR``; see
pipeline/reproducibility.py): an AVX2-only machine, an AVX-512 machine without bf16/AMX, and this machine
with everything it has (AVX512-BF16 and AMX where present). Each path runs

- the train stage itself (``python -m pipeline.stages.train`` on the committed data/batches, data/split/dev and
  models/base) for ``--steps`` steps with ``select_by: last`` and one dev evaluation at the end, in fp32 and
  in bf16 (params.yaml ``train.precision``), and
- the encoder of the index stage (:class:`pipeline.encoder.Encoder`, torch fp32) over ``--texts`` XQuAD-R
  passages,

each in a process of its own (the switches are read when the libraries load), with ``reproducibility:
fast`` so that the stage keeps the environment set here. The portable pins are one of the paths
(``avx2``); ``avx2, 1 thread`` shows what the thread count changes (``train.threads`` is a param, so
machines with more cores still train on the same number of threads). The filter stage runs again under
``reproducibility: portable`` with each other path's switches set around it: the pins must override them
and give metrics/data.json byte for byte. ``--chain PATH ...`` runs train -> index -> score in full under
the given paths and reports the largest metric differences from what ``make repro`` (portable, the AVX2
path) left in the workspace (run it after ``make repro``; ``--out metrics/isa_paths_chain.json``).

Reported per path: the sha256 of the trained weights and of the embeddings, the largest weight and
embedding difference from the reference path (``avx2``, the portable pins), the final training loss and
dev mAP, and the wall time as a ratio to the reference in the same run. Writes metrics/isa_paths.json
and prints a table.

Usage: python -m benchmarks.isa_paths [--steps 6] [--texts 512]   (after ``dvc repro assemble``)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.reproducibility import MODE_ENV, PORTABLE_ENV, machine  # noqa: E402

#: the kernel paths, by what they tell each library (unset variables: the library's own choice)
PATHS = {
    "avx2": dict(PORTABLE_ENV),
    "avx2, 1 thread": dict(PORTABLE_ENV),
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
               "DNNL_MAX_CPU_ISA": "AVX512_CORE", "MKL_CBWR": "AVX512,STRICT"},
    "avx512 + vnni/bf16": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16",
                           "DNNL_MAX_CPU_ISA": "AVX512_CORE_BF16"},
    "native (amx where present)": {},
}
REFERENCE = "avx2"

#: the filter stage's round trip (CTranslate2 int8) under its kernel paths
CT2_PATHS = {
    "avx2": dict(PORTABLE_ENV),
    "avx2, oneDNN native (vnni/amx int8)": {"CT2_USE_MKL": "0", "CT2_FORCE_CPU_ISA": "AVX2"},
    "avx512, oneDNN native": {"CT2_USE_MKL": "0", "CT2_FORCE_CPU_ISA": "AVX512"},
    "native (mkl on intel)": {},
}


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV and k != MODE_ENV}
    env.update(extra)
    env["HF_HUB_OFFLINE"] = env["HF_DATASETS_OFFLINE"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    return env


def slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_once(path: str, precision: str, steps: int, work: Path) -> dict:
    """The train stage under one kernel path: its weights, metrics and wall time."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["reproducibility"] = "fast"  # the stage keeps this process's switches
    params["train"].update(steps=steps, eval_every=steps, select_by="last", precision=precision,
                           threads=1 if "1 thread" in path else params["train"]["threads"])
    out = work / f"{slug(path)}-{precision}"
    out.mkdir(parents=True)
    (out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = clean_env(PATHS[path])
    env["PIPELINE_PARAMS"] = str(out / "params.yaml")
    if "1 thread" in path:
        env["OMP_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pipeline.stages.train", "--base", "models/base",
                          "--batches", "data/batches", "--dev", "data/split/dev", "--out", str(out / "model"),
                          "--live", "", "--metrics", str(out / "train.json"), "--timings", str(out / "timings.json")],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if run.returncode:
        raise SystemExit(f"train under {path} / {precision} failed:\n{run.stderr[-3000:]}")
    m = json.loads((out / "train.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    return {"path": path, "precision": precision, "wall_s": round(wall, 1), "s_per_step": timings.get("s_per_step"),
            "weights_sha256": sha256(out / "model" / "model.safetensors"),
            "final_train_loss": m["final_train_loss"], "dev_score": m["dev_score"],
            "dev_multi_map": m["dev_multi_map"], "weights": str(out / "model" / "model.safetensors")}


def filter_once(path: str, work: Path, mode: str = "fast") -> dict:
    """The filter stage (round trip zh->en with CTranslate2 int8) with the switches of one kernel path set
    in its environment: under ``fast`` they choose its kernels; under ``portable`` the stage's own pins
    must override them (the stand-in for running on a machine whose libraries would choose that path)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["reproducibility"] = mode
    out = work / f"filter-{mode}-{slug(path)}"
    out.mkdir(parents=True)
    (out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = clean_env(CT2_PATHS[path])
    env["PIPELINE_PARAMS"] = str(out / "params.yaml")
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pipeline.stages.filter", "--out", str(out / "filtered"),
                          "--metrics", str(out / "data.json"), "--work", str(out / "work")],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if run.returncode:
        raise SystemExit(f"filter under {path} failed:\n{run.stderr[-3000:]}")
    stats = json.loads((out / "data.json").read_text())
    zh = stats["languages"].get("zh", {})
    return {"path": path, "reproducibility": mode, "wall_s": round(wall, 1),
            "data_json_sha256": sha256(out / "data.json"),
            "kept": stats["total"]["kept"], "zh_kept": zh.get("kept"),
            "zh_mean_roundtrip_chrf_question": zh.get("mean_roundtrip_chrf_question")}


def chain_once(path: str, work: Path, dataset: str = "xquad-r") -> dict:
    """train -> index -> score, the stages themselves with params.yaml as it is, under one kernel path,
    from the committed data (data/batches, data/split/dev, models/base); the metrics they write."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["reproducibility"] = "fast"
    out = work / f"chain-{slug(path)}"
    (out / "metrics").mkdir(parents=True)
    (out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = clean_env(PATHS[path])
    env["PIPELINE_PARAMS"] = str(out / "params.yaml")
    cmds = [["pipeline.stages.train", "--out", str(out / "model"), "--live", "", "--metrics",
             str(out / "metrics/train.json"), "--timings", str(out / "timings.json")],
            ["pipeline.stages.index", "--dataset", dataset, "--model", str(out / "model"), "--out", str(out / "emb")],
            ["pipeline.stages.score", "--dataset", dataset, "--embeddings", str(out / "emb"), "--scores",
             str(out / "scores"), "--metrics", str(out / "metrics")]]
    walls = {}
    for cmd in cmds:
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(f"{cmd[0]} under {path} failed:\n{run.stderr[-3000:]}")
        walls[cmd[0].rsplit(".", 1)[1]] = round(time.perf_counter() - t0, 1)
    return {"path": path, "wall_s": walls, "weights_sha256": sha256(out / "model" / "model.safetensors"),
            "train": json.loads((out / "metrics/train.json").read_text()),
            dataset: json.loads((out / f"metrics/{dataset}.json").read_text())}


def repro_results(dataset: str = "xquad-r") -> dict:
    """The metrics `make repro` wrote (the workspace's metrics/train.json and metrics/<dataset>.json)."""
    return {"train": json.loads((ROOT / "metrics/train.json").read_text()),
            dataset: json.loads((ROOT / f"metrics/{dataset}.json").read_text())}


def chain_differences(a: dict, b: dict, dataset: str = "xquad-r") -> dict:
    """Largest absolute difference of the rates, of the rank distances and of the loss between two chains."""
    from scripts.verify import metric_kind

    worst = {}
    for section in ("train", dataset):
        for key, value in a[section].items():
            kind = metric_kind(key)
            if kind and isinstance(value, (int, float)) and isinstance(b[section].get(key), (int, float)):
                worst[kind] = max(worst.get(kind, 0.0), abs(float(b[section][key]) - float(value)))
    return worst


ENCODE = """
import json, sys, time, numpy as np, pandas as pd
from pipeline.encoder import Encoder
texts = json.load(open(sys.argv[1]))
enc = Encoder(sys.argv[2], engine="torch", batch_size=32, threads=int(sys.argv[4]), progress=False)
t0 = time.perf_counter(); v = enc.encode(texts, "passage: "); wall = time.perf_counter() - t0
np.save(sys.argv[3], v); print(json.dumps({"encode_s": round(wall, 2)}))
"""


def encode_once(path: str, texts_file: Path, model: str, work: Path) -> dict:
    out = work / f"emb-{slug(path)}.npy"
    threads = "1" if "1 thread" in path else "2"
    run = subprocess.run([sys.executable, "-c", ENCODE, str(texts_file), model, str(out), threads], cwd=ROOT,
                         env=clean_env(PATHS[path]), capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"encoding under {path} failed:\n{run.stderr[-3000:]}")
    return {"path": path, **json.loads(run.stdout.strip().splitlines()[-1]), "embeddings_sha256": sha256(out),
            "embeddings": str(out)}


def max_diff(a_file: str, b_file: str) -> float:
    import numpy as np

    if a_file.endswith(".npy"):
        return float(np.abs(np.load(a_file) - np.load(b_file)).max())
    from safetensors.numpy import load_file

    a, b = load_file(a_file), load_file(b_file)
    return float(max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max() for k in a))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--paths", nargs="*", default=list(PATHS))
    ap.add_argument("--filter-paths", nargs="*", default=list(CT2_PATHS))
    ap.add_argument("--portable-filter-paths", nargs="*", default=list(CT2_PATHS)[1:],
                    help="paths whose switches are set around a reproducibility: portable filter run")
    ap.add_argument("--chain", nargs="*", default=[],
                    help="paths to run train -> index -> score on in full (e.g. avx2 'native (amx where present)')")
    ap.add_argument("--out", default="metrics/isa_paths.json")
    args = ap.parse_args(argv)
    for need in ("data/batches/train.parquet", "data/split/dev", "models/base/model.safetensors"):
        if not (ROOT / need).exists():
            raise SystemExit(f"isa_paths: {need} not found: run `dvc repro assemble` first")
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pool = pd.read_parquet(ROOT / "data/split/dev/pool.parquet")
        texts_file = work / "texts.json"
        texts_file.write_text(json.dumps(pool["text"].tolist()[:args.texts]))
        chains = []
        for p in args.chain:  # against what `make repro` left in the workspace (portable, the AVX2 path)
            c = chain_once(p, work)
            c["identical_weights_to_repro"] = c["weights_sha256"] == sha256(ROOT / "models/trained/model.safetensors")
            c["max_abs_difference_to_repro"] = chain_differences(repro_results(), c)
            chains.append(c)
        filtering = [filter_once(p, work) for p in args.filter_paths]
        committed = sha256(ROOT / "metrics/data.json")
        for f in filtering:  # the first path is the reference
            f["identical_to_avx2"] = f["data_json_sha256"] == filtering[0]["data_json_sha256"]
            f["identical_to_metrics_data_json"] = f["data_json_sha256"] == committed
            f["time_vs_avx2"] = round(f["wall_s"] / filtering[0]["wall_s"], 2)
        # the same paths' switches in the environment of a portable run: the pins must give one result
        pinned = [filter_once(p, work, "portable") for p in args.portable_filter_paths]
        for f in pinned:
            f["identical_to_first"] = f["data_json_sha256"] == pinned[0]["data_json_sha256"]
            f["identical_to_metrics_data_json"] = f["data_json_sha256"] == committed
        encoding = [encode_once(p, texts_file, "models/base", work) for p in args.paths]
        training = [train_once(p, prec, args.steps, work) for prec in args.precisions for p in args.paths]
        if args.paths and REFERENCE not in args.paths:
            raise SystemExit(f"isa_paths: --paths must include the reference path {REFERENCE!r}")
        ref_e = next((e for e in encoding if e["path"] == REFERENCE), {})
        for e in encoding:
            e["max_abs_diff_vs_avx2"] = max_diff(ref_e["embeddings"], e.pop("embeddings")) if e is not ref_e else 0.0
            e["identical_to_avx2"] = e["embeddings_sha256"] == ref_e["embeddings_sha256"]
            e["time_vs_avx2"] = round(e["encode_s"] / ref_e["encode_s"], 2)
        ref_e.pop("embeddings", None)
        for prec in args.precisions:
            runs = [t for t in training if t["precision"] == prec]
            if not runs:
                continue
            ref = next(t for t in runs if t["path"] == REFERENCE)
            for t in runs:
                t["max_abs_weight_diff_vs_avx2"] = max_diff(ref["weights"], t["weights"]) if t is not ref else 0.0
                t["identical_to_avx2"] = t["weights_sha256"] == ref["weights_sha256"]
                t["time_vs_avx2_fp32"] = None
        ref32 = next((t for t in training if t["path"] == REFERENCE and t["precision"] == "fp32"), None)
        for t in training:
            t.pop("weights", None)
            if ref32:
                t["time_vs_avx2_fp32"] = round(t["wall_s"] / ref32["wall_s"], 2)
                t["step_time_vs_avx2_fp32"] = round(t["s_per_step"] / ref32["s_per_step"], 2)
    result = {"machine": machine(), "steps": args.steps, "texts": args.texts, "reference": REFERENCE,
              "paths": {p: PATHS[p] for p in args.paths}, "filter_paths": {p: CT2_PATHS[p] for p in args.filter_paths},
              "filter": filtering, "filter_portable": pinned, "encoding": encoding, "training": training,
              "chain": chains}
    (ROOT / args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'filter path':38} {'time':>6} {'same':>5} {'kept':>6} {'zh chrF':>8}")
    for f in filtering:
        print(f"{f['path']:38} {f['time_vs_avx2']:>5}x {str(f['identical_to_avx2']):>5} {f['kept']:>6} "
              f"{f['zh_mean_roundtrip_chrf_question']:>8}")
    for f in pinned:
        print(f"portable, switches of {f['path']!r} set: same as metrics/data.json: "
              f"{f['identical_to_metrics_data_json']}")
    print(f"\n{'path':28} {'encode':>8} {'same':>5} {'max diff':>9}")
    for e in encoding:
        print(f"{e['path']:28} {e['time_vs_avx2']:>7}x {str(e['identical_to_avx2']):>5} "
              f"{e['max_abs_diff_vs_avx2']:>9.2e}")
    print(f"\n{'path':28} {'prec':5} {'step':>6} {'same':>5} {'max w diff':>10} {'loss':>9} {'dev mAP':>8}")
    for t in training:
        print(f"{t['path']:28} {t['precision']:5} {t['step_time_vs_avx2_fp32']:>5}x {str(t['identical_to_avx2']):>5} "
              f"{t['max_abs_weight_diff_vs_avx2']:>10.2e} {t['final_train_loss']:>9.6f} {t['dev_multi_map']:>8.6f}")
    for c in chains:
        print(f"chain {c['path']}: stage seconds {c['wall_s']}, same weights as make repro: "
              f"{c['identical_weights_to_repro']}, largest differences {c['max_abs_difference_to_repro']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
