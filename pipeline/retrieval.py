"""FAISS index over the candidate pool, top-k search, and exact gold ranks for scoring.

Scores are inner products of L2-normalised vectors (cosine). ``IndexFlatIP`` is exact, so the
top-k run it writes equals a numpy ``argsort`` of ``queries @ pool.T`` (tests/test_retrieval.py).

Scoring needs the rank of every gold sentence in the *full* ranking (mAP over the whole pool,
rank distance), in the whole pool and in each language's sub-pool. :func:`gold_ranks` computes them
exactly without materialising all rankings: for each query and gold it counts, per language, the
candidates ranked above the gold. Ties are broken by pool order (the earlier candidate ranks
higher), i.e. ranks equal positions in a stable sort of ``-scores``.
"""
from __future__ import annotations

import numpy as np


def build_index(pool: np.ndarray, kind: str = "flat"):
    import faiss

    if kind != "flat":
        raise ValueError(f"unknown index kind {kind!r}; valid: 'flat'")
    index = faiss.IndexFlatIP(pool.shape[1])
    index.add(np.ascontiguousarray(pool, dtype=np.float32))
    return index


def search(index, queries: np.ndarray, k: int, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` scores and pool rows for every query, searched in batches (one query per call is ~20x slower)."""
    k = min(k, index.ntotal)
    scores = np.empty((len(queries), k), dtype=np.float32)
    rows = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), batch_size):
        scores[s : s + batch_size], rows[s : s + batch_size] = index.search(
            np.ascontiguousarray(queries[s : s + batch_size], dtype=np.float32), k)
    return scores, rows


def gold_ranks(queries: np.ndarray, pool: np.ndarray, pool_lang: np.ndarray, gold: np.ndarray,
               n_langs: int, chunk: int = 512) -> np.ndarray:
    """Candidates ranked above each gold, per pool language.

    Args:
        queries: ``(Q, d)`` query vectors. pool: ``(N, d)`` candidate vectors.
        pool_lang: ``(N,)`` language index of each candidate, in ``[0, n_langs)``.
        gold: ``(Q, G)`` pool row of each gold answer, ``-1`` where absent.
    Returns:
        ``above`` of shape ``(Q, G, n_langs)``: ``above[q, g, l]`` candidates of language ``l`` that rank
        above gold ``g`` for query ``q`` (-1 where the gold is absent). The gold's rank in the
        sub-pool of language ``l`` is ``above[q, g, l] + 1`` (for ``l`` its own language); its rank in
        the whole pool ``above[q, g].sum() + 1``.
    """
    Q, G = gold.shape
    onehot = np.zeros((len(pool), n_langs), dtype=np.float32)
    onehot[np.arange(len(pool)), pool_lang] = 1.0
    col = np.arange(len(pool))
    above = np.full((Q, G, n_langs), -1, dtype=np.int64)
    for s in range(0, Q, chunk):
        scores = queries[s : s + chunk] @ pool.T
        rows = np.arange(len(scores))
        for g in range(G):
            gi = gold[s : s + chunk, g]
            ok = gi >= 0
            if not ok.any():
                continue
            gs = scores[rows, np.where(ok, gi, 0)][:, None]
            before = (scores > gs) | ((scores == gs) & (col[None, :] < gi[:, None]))
            counts = np.rint(before.astype(np.float32) @ onehot).astype(np.int64)
            above[s : s + chunk, g][ok] = counts[ok]
    return above
