"""Ad hoc retrieval metrics from a top-k run and graded qrels, as trec_eval computes them (MIRACL, MTEB).

* ``ndcg_at_k`` (trec_eval ``ndcg_cut.k``): gain = the qrel's relevance (graded, linear), discount
  ``log2(rank + 1)`` (rank 1 undiscounted); the ideal DCG sorts *all* judged relevant documents of the
  query by relevance, whether retrieved or not.
* ``trec_recall_at_k`` (trec_eval ``recall.k``): relevant documents (relevance > 0) in the top ``k`` over all
  relevant documents of the query: :func:`pipeline.metrics.recall_at_k` (LAReQA's R@k) of their ranks in the
  run, a relevant document the run lacks having none.

The run is ordered as trec_eval orders it: by score, highest first, ties by docid in descending string
order (the rank column of a run file is ignored). A query without any relevant document in the qrels
is skipped and counted (``skipped``); a query with relevant documents but absent from the run scores 0
(trec_eval ``-c``). Means are over the scored queries.

Every value lies in [0, 1] by construction; :func:`check_unit_range` checks it before a value is returned
or written (one outside, e.g. a document ranked twice, is a bug upstream and raises
:class:`MetricRangeError` naming the metric).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pipeline.metrics import MetricRangeError, check_unit_range  # noqa: F401  (part of this module's interface)
from pipeline.metrics import recall_at_k


def trec_order(hits: Sequence[tuple[str, float]]) -> list[str]:
    """Docids of ``(docid, score)`` hits in trec_eval's order: score descending, then docid descending."""
    return [d for d, _ in sorted(hits, key=lambda h: (h[1], h[0]), reverse=True)]


def ndcg_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k of one query: ``ranked`` docids best first, ``rels`` docid -> relevance (0 = judged not relevant)."""
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if rels.get(d, 0) > 0)
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else float("nan")


def trec_recall_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 100) -> float:
    """Relevant documents in the top ``k`` of ``ranked`` (docids, best first) over all relevant documents of
    the query (``rels``: docid -> relevance, 0 = judged not relevant); NaN when the query has none."""
    rank: dict[str, float] = {}
    for i, d in enumerate(ranked, 1):
        rank.setdefault(d, i)  # a docid listed twice counts at its first place
    return recall_at_k([rank.get(d, math.inf) for d, r in rels.items() if r > 0], k)


def evaluate_run(run: Mapping[str, Sequence[tuple[str, float]]], qrels: Mapping[str, Mapping[str, int]],
                 ndcg_k: int = 10, recall_k: int = 100) -> tuple[dict, list[dict]]:
    """``(summary, per-query rows)`` of a run (qid -> ``(docid, score)`` hits) against qrels (qid -> docid -> rel).

    Summary keys: ``ndcg@{ndcg_k}``, ``recall@{recall_k}`` (means over scored queries), ``queries_scored``,
    ``queries_skipped`` (no relevant document in the qrels), ``queries_not_retrieved`` (scored 0).
    """
    rows, skipped, missing = [], 0, 0
    for qid in sorted(qrels):
        rels = qrels[qid]
        n_rel = sum(1 for r in rels.values() if r > 0)
        if n_rel == 0:
            skipped += 1
            continue
        if qid not in run:
            missing += 1
        ranked = trec_order(run.get(qid, ()))
        values = {f"ndcg@{ndcg_k}": ndcg_at_k(ranked, rels, ndcg_k),
                  f"recall@{recall_k}": trec_recall_at_k(ranked, rels, recall_k)}
        check_unit_range(values, f"query {qid}")
        rows.append({"qid": qid, **values, "relevant": n_rel, "retrieved": len(ranked)})
    n = len(rows)
    summary = {
        f"ndcg@{ndcg_k}": round(sum(r[f"ndcg@{ndcg_k}"] for r in rows) / n, 6) if n else float("nan"),
        f"recall@{recall_k}": round(sum(r[f"recall@{recall_k}"] for r in rows) / n, 6) if n else float("nan"),
        "queries_scored": n, "queries_skipped": skipped, "queries_not_retrieved": missing,
    }
    check_unit_range({k: summary[k] for k in (f"ndcg@{ndcg_k}", f"recall@{recall_k}")}, "mean over queries")
    return summary, rows
