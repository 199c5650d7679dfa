"""DVC stage ``mine``: hard-negative candidates for every training question, in every training language.

Reads ``data/split/train.parquet`` (the training pairs; the dev set is never mined) and the encoder
folder ``mining.model`` (the base model by default), and ``params.mining``, ``train.hard_negatives``,
``models`` (prefixes, pooling) and ``index`` (batching of the encoder). With ``train.hard_negatives:
false`` nothing is embedded: the outputs hold no candidates, only the answer groups. Writes
``data/mined/`` atomically: ``negatives.parquet`` (:data:`pipeline.mining.NEGATIVE_COLUMNS`, one row
per candidate, best first per question and language), ``groups.parquet`` (pair_id -> answer group,
:func:`pipeline.mining.answer_groups`); and ``metrics/mining.json`` (statistics: negatives per
language, rank histogram, share of questions without one). Sits between ``split`` and ``assemble``:
it depends on neither the strategy nor the seed, so one mining serves every experiment, and the
language policy (``mining.language``) is applied by ``assemble`` without mining again.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from .. import console
from ..encoder import Encoder
from ..errors import DataError
from ..io import atomic_dir, read_parquet, write_json, write_parquet
from ..schema import PAIR_COLUMNS
from ..mining import (answer_groups, empty_negatives, mine_negatives, mining_statistics, passage_pool,
                      question_table)
from ..params import load_params


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default="data/split/train.parquet")
    ap.add_argument("--model", help="default: params.yaml mining.model")
    ap.add_argument("--out", default="data/mined")
    ap.add_argument("--metrics", default="metrics/mining.json")
    args = ap.parse_args(argv)
    params = load_params()
    mp, m, p = params.mining, params.encoder, params.index
    pairs = read_parquet(args.train, required=PAIR_COLUMNS)
    pairs = pairs.loc[pairs["lang"].isin(params.languages)]
    if pairs.empty:
        raise DataError(f"mine: {args.train} has no pairs in the training languages {params.languages}")
    groups = answer_groups(pairs)
    questions = question_table(pairs, groups)
    t0 = time.perf_counter()
    if params.train.hard_negatives:
        model = args.model or mp.model
        if not (Path(model) / "config.json").exists():
            raise DataError(f"mine: mining.model {model!r} is not a model folder (no config.json)")
        pool = passage_pool(pairs, groups)
        encoder = Encoder.from_params(model, m, p, engine=mp.engine,
                                      device=p.device if mp.engine == "torch" else "cpu")
        qv = encoder.encode(questions["question"].tolist(), m.query_prefix, desc="mine: questions")
        pv = encoder.encode(pool["passage"].tolist(), m.passage_prefix, desc="mine: passages")
        negatives = mine_negatives(questions, qv, pool, pv, mp.rank_range, mp.margin, mp.per_pair)
        stats = {"enabled": True, "model": model, "engine": mp.engine, "rank_range": list(mp.rank_range),
                 "margin": mp.margin, "per_pair": mp.per_pair, "passages": int(len(pool)),
                 **mining_statistics(negatives, questions, list(params.languages), mp.rank_range)}
    else:
        negatives = empty_negatives()
        stats = {"enabled": False, "questions": int(len(questions))}
    stats["answer_groups"] = len(set(groups.values()))
    with atomic_dir(Path(args.out)) as tmp:
        write_parquet(tmp / "negatives.parquet", negatives)
        write_parquet(tmp / "groups.parquet", pd.DataFrame({"pair_id": list(groups), "group": list(groups.values())}))
    write_json(Path(args.metrics), stats)
    # the wall time is printed, not stored, so that the outputs depend on the inputs alone
    print(json.dumps({**{k: v for k, v in stats.items() if not isinstance(v, dict)},
                      "wall_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    console.run(main, "mine")
