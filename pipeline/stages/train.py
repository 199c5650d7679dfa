"""DVC stage ``train``: fine-tune the base encoder on the assembled batches.

Reads ``models/base/`` (a Hugging Face folder), ``data/batches/{train,val}.parquet``, the dev set
``data/split/dev/`` and ``params.train``, ``params.encoder``, ``params.models`` and ``seed``; trains with
:func:`pipeline.training.train`, keeps the checkpoint ``train.select_by`` chooses, and writes it to
``models/trained/`` atomically: config, model.safetensors, the base folder's tokenizer files unchanged
and ``training.json`` (params, input md5s, git revision, the kept step and every evaluation), plus
sentence-transformers files and a model card (:mod:`pipeline.st_format`). Logs per-step curves with dvclive
under ``dvclive/train/`` and writes ``metrics/train.json`` (flat: the rule, the kept step, its dev
scores). Timings vary run to run, so they go to ``logs/train.json`` (not tracked): the tracked files
are identical for identical runs. ``train.steps: 0`` copies ``models/base`` unchanged (the untrained
baseline), with its dev scores.

With ``train.processes: N`` (N > 1) it starts itself as ``N`` data-parallel processes under torchrun on
this machine; launched by ``torchrun --nproc_per_node N -m pipeline.stages.train ...`` (several machines)
it is one of them (:mod:`pipeline.distributed`: each takes its slice of every batch). Only rank 0 writes
the model, metrics, logs and dvclive files. See docs/scaling.md.

Before any work it checks that every evaluation set in ``index.datasets`` can be found (mirror, then
URL), so a run that could not be scored fails in seconds, not after training; and it removes the
temporary folders and files a run killed outright (``kill -9``) left beside its outputs
(:func:`remove_stale_outputs`).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd

from .. import distributed
from ..errors import PipelineError
from ..io import atomic_dir, remove_stale_temps, write_json
from ..lareqa import dataset_files
from ..params import load_params, untraced
from ..reproducibility import current_mode, machine
from ..st_format import code_digest
from ..device import pick_device
from ..dual_encoder import DualEncoder, text_batches
from ..model_io import copy_model, load_encoder, save_encoder
from ..selection import DevSet, evaluate_dev
from ..training import train
from .. import console

TIMING_KEYS = ("wall_s", "s_per_step", "eval_s")
logger = logging.getLogger(__name__)


def check_evaluation_sets(params) -> None:
    """Fail now, not after training, when an evaluation set cannot be resolved."""
    for name in params.index.datasets:
        dataset_files(params.datasets[name], params.mirror_path)


def untrained(base: str, params, dev: DevSet, out: str, batches: str = "data/batches",
              dev_dir: str = "data/split/dev") -> dict:
    """``steps: 0``: the base model unchanged, scored on the dev set like a trained run's step 0."""
    device = pick_device(params.train.device)
    model, tokenizer = load_encoder(base, device)
    m = params.encoder
    scores = evaluate_dev(DualEncoder(model, tokenizer, m.query_prefix, m.passage_prefix, m.pooling,
                                      params.train.max_length), dev)
    metrics = {"select_by": "untrained", "steps_run": 0, "best_step": 0, "stopped_early": False,
               **{k: round(v, 6) for k, v in scores.items()}}
    with atomic_dir(out) as tmp:
        copy_model(base, tmp, model_info(params, base, batches, dev_dir, metrics), params.encoder.max_length)
    return metrics


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_info(params, base: str, batches: str, dev_dir: str, metrics: dict) -> dict:
    """What made the model (``training.json`` and the model card): params sections, input md5s, git revision."""
    inputs = sorted([*Path(batches).glob("*.parquet"), *Path(dev_dir).glob("*.parquet")])
    return {"base": str(base), "seed": params.seed, "train": params.train.model_dump(),
            "prefixes": [params.encoder.query_prefix, params.encoder.passage_prefix],
            "pooling": params.encoder.pooling,
            "params": {"models": params.models.model_dump(), "encoder": params.encoder.model_dump(),
                       "sampling": params.sampling.model_dump(),
                       "train": params.train.model_dump(), "seed": params.seed,
                       "languages": list(params.languages)},
            "inputs_md5": {p.as_posix(): file_md5(p) for p in inputs},
            "sources": [s.name for s in params.gather.sources], "code": code_digest(),
            # portable: the same bytes on any machine, so no machine is named; fast: this machine's kernels
            "reproducibility": current_mode(), **({"machine": machine()} if current_mode() == "fast" else {}),
            **{k: v for k, v in metrics.items() if k not in TIMING_KEYS}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="models/base")
    ap.add_argument("--batches", default="data/batches")
    ap.add_argument("--dev", default="data/split/dev")
    ap.add_argument("--out", default="models/trained")
    ap.add_argument("--live", default="dvclive/train", help="dvclive folder; '' logs nothing")
    ap.add_argument("--metrics", default="metrics/train.json")
    ap.add_argument("--timings", default="logs/train.json")
    args = ap.parse_args(argv)
    params = load_params()
    if distributed.from_env().is_main:  # the one process that writes the outputs
        remove_stale_outputs(args)
    check_evaluation_sets(untraced(params))  # fails before hours of training, changes no output
    if params.train.steps and distributed.relaunch(params.train.processes, "pipeline.stages.train",
                                                   sys.argv[1:] if argv is None else list(argv)):
        return  # rank 0 of the torchrun job wrote the outputs
    dev = DevSet(pd.read_parquet(Path(args.dev) / "queries.parquet"), pd.read_parquet(Path(args.dev) / "pool.parquet"))
    d = distributed.from_env()
    if not d.is_main:  # a torchrun worker: train its slices, write nothing
        try:
            run(args, params, dev, None, d)
        finally:
            distributed.teardown(d)
        return
    try:
        with live_folder(args.live) as live:
            metrics = run(args, params, dev, live, d)
    finally:
        distributed.teardown(d)
    write_json(args.timings, {k: metrics.pop(k) for k in TIMING_KEYS if k in metrics})
    write_json(args.metrics, {**metrics, "reproducibility": current_mode()})
    print(json.dumps(metrics))


def remove_stale_outputs(args) -> list[Path]:
    """Remove the temporary files and folders a killed earlier run (``kill -9``, out of memory) left
    beside this stage's outputs: only the temporary names :mod:`pipeline.io` gives these outputs
    (``models/.trained.*.tmp``, ``dvclive/.train.*.tmp``, ``metrics/.train.json.*.json.tmp``, ...)."""
    removed = [*remove_stale_temps(args.out), *remove_stale_temps(args.metrics, ".json"),
               *remove_stale_temps(args.timings, ".json")]
    if args.live:
        removed += remove_stale_temps(args.live)
    for path in removed:
        logger.info("train: removed %s, left by an interrupted run", path)
    return removed


@contextlib.contextmanager
def live_folder(path: str):
    """dvclive logs into a temporary folder that replaces ``path`` only when the stage succeeds, so
    ``path`` never holds a half-written log; None for ''. (DVC deletes the stage's outputs before it
    runs; a killed run's temporary folder is removed by the next run: :func:`remove_stale_outputs`.)"""
    if not path:
        yield None
        return
    with atomic_dir(path) as tmp:
        (tmp / "plots" / "metrics").mkdir(parents=True)  # the declared plots folder exists even when empty
        yield tmp


def run(args, params, dev: DevSet, live: Path | None, d: distributed.Dist = distributed.SINGLE) -> dict | None:
    """Train (or copy the base model for ``steps: 0``) and save the model; returns the metrics and timings
    (None on a torchrun rank other than 0, which writes nothing)."""
    p = params.train
    t0 = time.perf_counter()
    if p.steps == 0:
        if not d.is_main:
            return None
        metrics = untrained(args.base, params, dev, args.out, args.batches, args.dev)
        if live:  # dvclive's summary of a run without steps: the dev scores at step 0
            write_json(live / "metrics.json", {"dev": {k[4:]: v for k, v in metrics.items() if k.startswith("dev_")},
                                               "step": 0})
        metrics["wall_s"] = round(time.perf_counter() - t0, 1)
    else:
        d, device = distributed.setup(p.device)
        if p.precision == "bf16" and device.type == "cpu" and current_mode() == "portable":
            raise PipelineError("train.precision: bf16 on the CPU needs reproducibility: fast (portable pins the "
                                "kernels to AVX2, which has no bf16 arithmetic: each step many times slower, "
                                "benchmarks/isa_paths.py); use precision: fp32 for results that regenerate on "
                                "any machine")
        batches = Path(args.batches)
        train_b = text_batches(pd.read_parquet(batches / "train.parquet"), p.hard_negatives)
        val_b = text_batches(pd.read_parquet(batches / "val.parquet"))  # dev pairs are not mined
        model, _, metrics = train(args.base, train_b, val_b, p, params.encoder, params.seed, live_dir=live,
                                  device=device, dev=dev, dist=d)
        if not d.is_main:
            return None
        history = metrics.pop("evaluations")
        info = {**model_info(params, args.base, args.batches, args.dev, metrics), "evaluations": history}
        with atomic_dir(args.out) as tmp:
            save_encoder(model, args.base, tmp, info, params.encoder.max_length)
    return metrics


if __name__ == "__main__":
    console.run(main, "train")
