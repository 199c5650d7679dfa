"""DVC stage ``score``: LAReQA metrics from the embeddings written by ``index``.

Writes ``metrics/<dataset>.json`` (flat headline metrics: mono / cross / multi mAP, mAP@k, R@k,
rank distance, each also for seen and unseen languages), ``metrics/<dataset>-languages.csv`` (one
row per query language, the DVC plots data) and ``data/scores/<dataset>/`` (``per_query.parquet``,
the AP of every query in every setting, for significance tests; ``cells.csv``, every
query-language x pool-language cell).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_dir, write_csv, write_json
from ..metrics import cell_table, language_table, per_query_table, summarise
from ..params import load_params
from ..retrieval import gold_ranks


def score_dataset(emb_dir: Path, map_cutoff: int, recall_at, unseen) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    queries = pd.read_parquet(emb_dir / "queries.parquet")
    pool = pd.read_parquet(emb_dir / "pool.parquet")
    qv, pv = np.load(emb_dir / "queries.npy"), np.load(emb_dir / "pool.npy")
    langs = sorted(pool["lang"].unique())
    lang_ix = {l: i for i, l in enumerate(langs)}
    row_of = pd.Series(np.arange(len(pool)), index=pool["cand_id"])
    # gold[q, l]: pool row of question q's answer sentence in language l (-1 if the question lacks l)
    gold_of_id = queries.assign(row=row_of[queries["gold"]].to_numpy()).pivot(index="id", columns="lang", values="row")
    gold_of_id = gold_of_id.reindex(columns=langs).fillna(-1).astype(np.int64)
    gold = gold_of_id.loc[queries["id"]].to_numpy()
    above = gold_ranks(qv, pv, pool["lang"].map(lang_ix).to_numpy(), gold, len(langs))
    per_query = per_query_table(queries, langs, above, gold, map_cutoff, recall_at)
    cells = cell_table(per_query)
    summary = summarise(cells, set(unseen))
    summary.update({"queries": int(len(queries)), "pool": int(len(pool)), "languages": len(langs)})
    return summary, language_table(cells), cells, per_query


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embeddings", default="data/embeddings")
    args = ap.parse_args(argv)
    params = load_params()
    p = params.score
    for name in params.index.datasets:
        t0 = time.perf_counter()
        ds_langs = set(params.datasets[name].languages)
        unseen = set(p.unseen_languages) | (ds_langs - set(params.languages))
        summary, languages, cells, per_query = score_dataset(Path(args.embeddings) / name, p.map_cutoff,
                                                             p.recall_at, unseen)
        summary["score_seconds"] = round(time.perf_counter() - t0, 2)
        with atomic_dir(Path("data/scores") / name) as tmp:
            per_query.to_parquet(tmp / "per_query.parquet", index=False)
            cells.to_csv(tmp / "cells.csv", index=False, float_format="%.6f")
        languages["seen"] = ~languages["lang"].isin(unseen)
        write_csv(Path("metrics") / f"{name}-languages.csv", languages)
        write_json(Path("metrics") / f"{name}.json", summary)
        print(name, {k: v for k, v in summary.items() if k in ("mono_map", "cross_map", "multi_map", "multi_rank_distance")})


if __name__ == "__main__":
    main()
