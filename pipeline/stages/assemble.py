"""DVC stage ``assemble``: training and validation batches from the filtered pairs.

Reads ``data/filtered/pairs.parquet`` (one row per ``(pair_id, lang)``) and ``params.sampling``,
``seed`` and ``languages``; holds out ``sampling.val_fraction`` of the pair_ids and builds X-X / X-Y /
hybrid batches with :mod:`pipeline.batching`. Writes ``data/batches/train.parquet`` and
``data/batches/val.parquet`` (one row per batch row, in training order; byte-identical for equal
inputs) and ``metrics/batches.json`` (flat statistics, ``train_*`` and ``val_*``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ..batching import assemble, batch_statistics
from ..io import write_json, write_parquet
from ..params import load_params


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="data/filtered/pairs.parquet")
    ap.add_argument("--out", default="data/batches")
    ap.add_argument("--metrics", default="metrics/batches.json")
    args = ap.parse_args(argv)
    params = load_params()
    pairs = pd.read_parquet(args.pairs)
    train, val = assemble(pairs, params.languages, params.sampling, params.seed)
    out = Path(args.out)
    write_parquet(out / "train.parquet", train)
    write_parquet(out / "val.parquet", val)
    stats = {"mode": params.sampling.mode, "alpha": params.sampling.alpha,
             "pairs_in": int(len(pairs)), "pair_ids_in": int(pairs["pair_id"].nunique())}
    stats.update({f"train_{k}": v for k, v in batch_statistics(train).items()})
    stats.update({f"val_{k}": v for k, v in batch_statistics(val).items()})
    write_json(args.metrics, stats)
    print(json.dumps({k: v for k, v in stats.items() if "lang_pair" not in k}))


if __name__ == "__main__":
    main()
