"""DVC stage ``split``: hold out the dev set once, for every strategy, alpha and seed alike.

Reads ``data/filtered/pairs.parquet`` and ``params.dev`` and ``params.languages``; writes
``data/split/train.parquet`` (the pairs batches are drawn from), ``data/split/dev.parquet`` (the held-out
pairs, for the optional validation loss) and ``data/split/dev/`` (``queries.parquet``, ``pool.parquet``:
the dev retrieval set scored during training, see :mod:`pipeline.devset`; ``stats.json``). The run's
``seed`` and ``sampling`` are not inputs, so DVC keeps one byte-identical dev set across experiments.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..devset import retrieval_set, split_pairs, statistics
from ..errors import DataError
from ..io import atomic_dir, read_parquet, write_parquet
from ..params import load_params
from ..schema import PAIR_COLUMNS
from .. import console


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="data/filtered/pairs.parquet")
    ap.add_argument("--out", default="data/split")
    args = ap.parse_args(argv)
    params = load_params()
    pairs = read_parquet(args.pairs, required=PAIR_COLUMNS)
    pairs = pairs.loc[pairs["lang"].isin(params.languages)]
    if pairs.empty:
        raise DataError(f"split: {args.pairs} has no pairs in the training languages {params.languages}")
    train, dev = split_pairs(pairs, params.dev.fraction, params.dev.seed)
    queries, pool = retrieval_set(dev, params.languages)
    stats = statistics(train, dev, queries, pool)
    out = Path(args.out)
    with atomic_dir(out / "dev") as tmp:
        queries.to_parquet(tmp / "queries.parquet", index=False)
        pool.to_parquet(tmp / "pool.parquet", index=False)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    write_parquet(out / "train.parquet", train)
    write_parquet(out / "dev.parquet", dev)
    print(json.dumps(stats))


if __name__ == "__main__":
    console.run(main, "split")
