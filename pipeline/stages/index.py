"""DVC stage ``index``: embed every evaluation set with the encoder, build a FAISS index, search.

One dataset per run (``--dataset``; dvc.yaml runs one stage per entry of ``params.index.datasets``).
It writes, under ``data/embeddings/<dataset>/``:
``queries.npy`` / ``pool.npy`` (float32, L2-normalised, one row per record), ``queries.parquet``
(qid, id, lang, text, gold) and ``pool.parquet`` (cand_id, lang, text), whose row order matches the
arrays; ``pool.faiss`` (the index); and ``run.parquet``, the top-k run (qid, cand_id, rank, score).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from ..encoder import Encoder
from ..io import atomic_dir
from ..lareqa import dataset_files, load_lareqa
from ..params import load_params
from ..retrieval import build_index, search
from .. import console

RUN_DEPTH = 100


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="a key of params.datasets")
    ap.add_argument("--model", default="models/trained")
    ap.add_argument("--out", help="default: data/embeddings/<dataset>")
    args = ap.parse_args(argv)
    params = load_params()
    p, m = params.index, params.encoder
    if args.dataset not in params.datasets:
        raise SystemExit(f"index: unknown dataset {args.dataset!r}; params.yaml datasets: {sorted(params.datasets)}")
    ds = load_lareqa(args.dataset, dataset_files(params.datasets[args.dataset], params.mirror_path))  # validate first
    encoder = Encoder.from_params(args.model, m, p)
    t0 = time.perf_counter()
    q = encoder.encode(ds.queries["text"].tolist(), m.query_prefix, desc=f"{args.dataset} queries")
    t1 = time.perf_counter()
    c = encoder.encode(ds.pool["text"].tolist(), m.passage_prefix, desc=f"{args.dataset} pool")
    t2 = time.perf_counter()
    index = build_index(c, p.faiss_index)
    scores, rows = search(index, q, RUN_DEPTH)
    run = pd.DataFrame({
        "qid": ds.queries["qid"].repeat(rows.shape[1]).to_numpy(),
        "cand_id": ds.pool["cand_id"].to_numpy()[rows.ravel()],
        "rank": list(range(1, rows.shape[1] + 1)) * len(q),
        "score": scores.ravel(),
    })
    t3 = time.perf_counter()
    with atomic_dir(Path(args.out or f"data/embeddings/{args.dataset}")) as tmp:
        np.save(tmp / "queries.npy", q)
        np.save(tmp / "pool.npy", c)
        ds.queries[["qid", "id", "lang", "text", "gold"]].to_parquet(tmp / "queries.parquet", index=False)
        ds.pool[["cand_id", "lang", "text"]].to_parquet(tmp / "pool.parquet", index=False)
        faiss.write_index(index, str(tmp / "pool.faiss"))
        run.to_parquet(tmp / "run.parquet", index=False)
    # timings are printed, not stored, so that the outputs depend on the inputs alone
    print(json.dumps({"dataset": args.dataset, "engine": p.engine, "compute_type": p.compute_type,
                      "batch_size": p.batch_size, "max_tokens": p.max_tokens, "threads": p.threads,
                      "inter_threads": p.inter_threads,
                      "queries": len(q), "pool": len(c), "encode_queries_s": round(t1 - t0, 1),
                      "encode_pool_s": round(t2 - t1, 1), "texts_per_s": round((len(q) + len(c)) / (t2 - t0), 1),
                      "search_s": round(t3 - t2, 2)}))


if __name__ == "__main__":
    console.run(main, "index")
