"""DVC stage ``assemble``: training and validation batches from the filtered pairs.

Reads ``data/split/train.parquet`` and ``data/split/dev.parquet`` (the split made once by the ``split``
stage; one row per ``(pair_id, lang)``) and ``params.sampling``, ``seed`` and ``languages``; builds
X-X / X-Y / hybrid batches with :mod:`pipeline.batching`. Writes ``data/batches/train.parquet`` and
``data/batches/val.parquet`` (one row per batch row, in training order; byte-identical for equal
inputs) and ``data/batches/stats.json`` (flat statistics, ``train_*`` and ``val_*``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ..batching import assemble, batch_statistics
from ..io import atomic_dir, write_json, write_parquet
from ..params import load_params
from .. import console


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="data/split")
    ap.add_argument("--out", default="data/batches")
    args = ap.parse_args(argv)
    params = load_params()
    pairs = pd.read_parquet(Path(args.split) / "train.parquet")
    dev = pd.read_parquet(Path(args.split) / "dev.parquet")
    train, val = assemble(pairs, dev, params.languages, params.sampling, params.seed)
    out = Path(args.out)
    stats = {"mode": params.sampling.mode, "alpha": params.sampling.alpha,
             "pairs_in": int(len(pairs)), "pair_ids_in": int(pairs["pair_id"].nunique())}
    stats.update({f"train_{k}": v for k, v in batch_statistics(train).items()})
    stats.update({f"val_{k}": v for k, v in batch_statistics(val).items()})
    with atomic_dir(out) as tmp:
        write_parquet(tmp / "train.parquet", train)
        write_parquet(tmp / "val.parquet", val)
        write_json(tmp / "stats.json", stats)
    print(json.dumps({k: v for k, v in stats.items() if "lang_pair" not in k}))


if __name__ == "__main__":
    console.run(main, "assemble")
