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


# --- any FAISS index factory string (large corpora: MIRACL), and its quality against exact search ---

def build_factory_index(factory: str, dim: int, train: np.ndarray | None = None, add=()):
    """``faiss.index_factory(dim, factory, METRIC_INNER_PRODUCT)`` (e.g. ``"Flat"``, ``"IVF4096,PQ32"``,
    ``"HNSW32"``), trained on ``train`` when the index needs training, then fed every array of ``add``
    (e.g. one per corpus shard) in order."""
    import faiss

    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(f"FAISS index factory string {factory!r} is not valid for dim {dim}: "
                         f"{str(err).strip().splitlines()[-1]}") from None
    if not index.is_trained:
        if train is None or not len(train):
            raise ValueError(f"FAISS index {factory!r} needs training vectors; none were given")
        index.train(np.ascontiguousarray(train, dtype=np.float32))
    for block in add:
        index.add(np.ascontiguousarray(block, dtype=np.float32))
    return index


def set_search_params(index, params: str | None) -> None:
    """Search-time settings as FAISS ``ParameterSpace`` text, e.g. ``"nprobe=16"`` or ``"efSearch=128"``."""
    if params:
        import faiss

        faiss.ParameterSpace().set_index_parameters(index, params)


def index_bytes(index) -> int:
    """The index's size in bytes: the length of ``faiss.serialize_index`` (what it takes in memory and on disk)."""
    import faiss

    return int(faiss.serialize_index(index).size)


def exact_search_blocks(queries: np.ndarray, blocks, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product search over vectors given in ``blocks`` (an iterable of arrays, e.g.
    memory-mapped shards), merged block by block: ``(scores, rows)`` with rows numbered across blocks."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_r = np.zeros((len(q), 0), dtype=np.int64)
    offset = 0
    for block in blocks:
        block = np.asarray(block, dtype=np.float32)
        s, r = search(build_index(block), q, k)
        s_all, r_all = np.concatenate([best_s, s], 1), np.concatenate([best_r, r + offset], 1)
        top = np.argsort(-s_all, axis=1, kind="stable")[:, :k]
        best_s, best_r = np.take_along_axis(s_all, top, 1), np.take_along_axis(r_all, top, 1)
        offset += len(block)
    return best_s, best_r


def recall_vs_exact(approx_rows: np.ndarray, exact_rows: np.ndarray) -> float:
    """Mean share of each query's exact top-k rows that the approximate top-k also returns (1.0: identical sets)."""
    k = exact_rows.shape[1]
    if not len(exact_rows) or not k:
        return float("nan")
    hits = [len(set(a[a >= 0].tolist()) & set(e.tolist())) / k for a, e in zip(approx_rows, exact_rows, strict=True)]
    return float(np.mean(hits))
