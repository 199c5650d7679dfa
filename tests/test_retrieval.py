"""FAISS search equals a numpy reference; exact gold ranks equal positions in a full stable sort."""
import numpy as np

from pipeline.encoder import normalise
from pipeline.retrieval import build_index, gold_ranks, search


def _data(seed=0, n=300, q=40, d=16):
    rng = np.random.default_rng(seed)
    return normalise(rng.normal(size=(q, d))).astype(np.float32), normalise(rng.normal(size=(n, d))).astype(np.float32)


def test_faiss_search_equals_numpy():
    queries, pool = _data()
    scores, rows = search(build_index(pool), queries, k=10, batch_size=7)
    ref = queries @ pool.T
    ref_rows = np.argsort(-ref, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, np.take_along_axis(ref, ref_rows, 1), rtol=1e-5, atol=1e-6)


def test_gold_ranks_match_a_full_sort():
    queries, pool = _data(seed=1)
    pool[5] = pool[7]  # an exact tie
    langs = np.arange(len(pool)) % 3
    rng = np.random.default_rng(2)
    gold = rng.integers(0, len(pool), size=(len(queries), 3))
    gold[:, 0] = 7
    gold[3, 2] = -1
    above = gold_ranks(queries, pool, langs, gold, n_langs=3, chunk=9)
    scores = queries @ pool.T
    for qi in range(len(queries)):
        order = np.argsort(-scores[qi], kind="stable")
        position = np.empty(len(pool), dtype=int)
        position[order] = np.arange(1, len(pool) + 1)
        for g in range(3):
            if gold[qi, g] < 0:
                assert (above[qi, g] == -1).all()
                continue
            assert above[qi, g].sum() + 1 == position[gold[qi, g]]
            lang = langs[gold[qi, g]]
            sub = np.flatnonzero(langs == lang)
            sub_order = sub[np.argsort(-scores[qi, sub], kind="stable")]
            assert above[qi, g, lang] + 1 == list(sub_order).index(gold[qi, g]) + 1
