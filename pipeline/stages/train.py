"""DVC stage ``train``: fine-tune the base encoder on the assembled batches.

Reads ``models/base/`` (a Hugging Face folder), ``data/batches/{train,val}.parquet`` and
``params.train``, ``params.models`` and ``seed``; trains with :func:`pipeline.training.train` and writes
the best weights (by validation loss) to ``models/trained/`` atomically: config, model.safetensors,
the base folder's tokenizer files unchanged and ``training.json``. Logs per-step curves with dvclive
under ``dvclive/train/`` and writes ``metrics/train.json``. ``train.steps: 0`` copies ``models/base``
unchanged (the untrained baseline).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import pandas as pd

from ..io import atomic_dir, write_json
from ..params import load_params
from ..training import copy_model, pick_device, save_encoder, text_batches, train


TIMING_KEYS = ("wall_s", "s_per_step", "eval_s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="models/base")
    ap.add_argument("--batches", default="data/batches")
    ap.add_argument("--out", default="models/trained")
    ap.add_argument("--live", default="dvclive/train")
    ap.add_argument("--metrics", default="metrics/train.json")
    args = ap.parse_args(argv)
    params = load_params()
    p = params.train
    batches = Path(args.batches)
    if p.steps == 0:
        t0 = time.perf_counter()
        with atomic_dir(args.out) as tmp:
            copy_model(args.base, tmp)
        shutil.rmtree(args.live, ignore_errors=True)
        (Path(args.live) / "plots" / "metrics").mkdir(parents=True)  # the declared plots folder exists, empty
        metrics = {"steps_run": 0, "best_step": 0, "initial_val_loss": None, "best_val_loss": None,
                   "final_val_loss": None, "final_train_loss": None, "stopped_early": False,
                   "wall_s": round(time.perf_counter() - t0, 1), "s_per_step": None, "eval_s": 0.0, "trainable_params": 0,
                   "frozen_params": 0, "total_params": None, "device": "none"}
    else:
        train_b = text_batches(pd.read_parquet(batches / "train.parquet"), p.hard_negatives)
        val_b = text_batches(pd.read_parquet(batches / "val.parquet"), p.hard_negatives)
        model, _, metrics = train(args.base, train_b, val_b, p, params.models, params.seed, live_dir=args.live,
                                  device=pick_device())
        info = {"base": str(args.base), "seed": params.seed, "train": p.model_dump(),
                "prefixes": [params.models.query_prefix, params.models.passage_prefix],
                "pooling": params.models.pooling,
                # timings vary run to run; they go to metrics/train.json, not into the model folder,
                # so that the same params and seed give a byte-identical models/trained
                **{k: v for k, v in metrics.items() if k not in TIMING_KEYS}}
        with atomic_dir(args.out) as tmp:
            save_encoder(model, args.base, tmp, info)
    write_json(args.metrics, metrics)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
