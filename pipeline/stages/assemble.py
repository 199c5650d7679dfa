"""DVC stage ``assemble``: training and validation batches from the filtered pairs.

Reads ``data/split/train.parquet`` and ``data/split/dev.parquet`` (the split made once by the ``split``
stage; one row per ``(pair_id, lang)``) and ``params.sampling``, ``seed`` and ``languages``; builds
X-X / X-Y / hybrid batches with :mod:`pipeline.batching`. Writes ``data/batches/train.parquet`` and
``data/batches/val.parquet`` (one row per batch row, in training order; byte-identical for equal
inputs) and ``data/batches/stats.json`` (flat statistics, ``train_*`` and ``val_*``).

With ``train.hard_negatives: true`` each training row also gets ``hard_negatives`` and ``negative_langs``
(lists): up to ``mining.per_pair`` of the mined candidates (``data/mined/``, stage ``mine``) in the
languages ``mining.language`` allows, never gold for a row of the same batch
(:func:`pipeline.batching.with_hard_negatives`). The batches themselves are the same as without them.
Validation batches (``select_by: val_loss`` only) get none: the dev pairs are not mined.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..batching import assemble, batch_statistics, with_hard_negatives
from ..errors import DataError
from ..mining import NEGATIVE_COLUMNS, NegativePicker
from ..io import atomic_dir, read_parquet, write_json, write_parquet
from ..params import load_params
from ..schema import PAIR_COLUMNS
from .. import console


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="data/split")
    ap.add_argument("--mined", default="data/mined")
    ap.add_argument("--out", default="data/batches")
    args = ap.parse_args(argv)
    params = load_params()
    pairs = read_parquet(Path(args.split) / "train.parquet", required=PAIR_COLUMNS)
    dev = read_parquet(Path(args.split) / "dev.parquet", required=PAIR_COLUMNS)
    train, val = assemble(pairs, dev, params.languages, params.sampling, params.seed)
    out = Path(args.out)
    stats = {"mode": params.sampling.mode, "alpha": params.sampling.alpha,
             "pairs_in": int(len(pairs)), "pair_ids_in": int(pairs["pair_id"].nunique())}
    if params.train.hard_negatives:
        mined = Path(args.mined)
        negatives = read_parquet(mined / "negatives.parquet", required=NEGATIVE_COLUMNS)
        groups = read_parquet(mined / "groups.parquet", required=["pair_id", "group"])
        if negatives.empty:
            raise DataError(f"assemble: {mined / 'negatives.parquet'} has no candidates; rerun the mine stage with "
                            "train.hard_negatives: true")
        picker = NegativePicker(negatives, dict(zip(groups["pair_id"], groups["group"], strict=True)),
                                params.mining.language, params.mining.per_pair)
        train, dropped = with_hard_negatives(train, picker)
        stats.update(negative_policy=params.mining.language, negatives_left_out_in_batch=dropped)
    stats.update({f"train_{k}": v for k, v in batch_statistics(train).items()})
    stats.update({f"val_{k}": v for k, v in batch_statistics(val).items()})
    with atomic_dir(out) as tmp:
        write_parquet(tmp / "train.parquet", train)
        write_parquet(tmp / "val.parquet", val)
        write_json(tmp / "stats.json", stats)
    print(json.dumps({k: v for k, v in stats.items() if "lang_pair" not in k}))


if __name__ == "__main__":
    console.run(main, "assemble")
