"""Each metric on small hand-computed rankings, ties included."""
import numpy as np
import pandas as pd
import pytest

from pipeline.metrics import (
    average_precision,
    average_precision_at_k,
    cell_table,
    per_query_table,
    rank_distance,
    recall_at_k,
    summarise,
    unseen_languages,
)
from pipeline.retrieval import gold_ranks


def test_average_precision_by_hand():
    # relevant at ranks 1, 3, 6: (1/1 + 2/3 + 3/6) / 3
    assert average_precision([3, 1, 6]) == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert average_precision([4]) == pytest.approx(0.25)


def test_average_precision_at_k_by_hand():
    # XTREME: only hits within k count, divided by min(k, n_relevant)
    assert average_precision_at_k([1, 3, 6], k=5) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision_at_k([1, 3, 6], k=2) == pytest.approx(1 / 2)
    assert average_precision_at_k([30], k=20) == 0.0


def test_recall_and_rank_distance():
    assert recall_at_k([1, 3, 12], 10) == pytest.approx(2 / 3)
    assert recall_at_k([2], 1) == 0.0
    assert rank_distance([7, 2, 40]) == 38
    assert np.isnan(rank_distance([5]))


def test_ties_are_broken_by_pool_order():
    # query scores for pool [c0, c1, c2, c3]: c1 and c2 tie with the gold c2
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    pool = np.array([[0.1, 1], [0.5, 1], [0.5, 1], [0.9, 1]], dtype=np.float32)
    above = gold_ranks(q, pool, np.zeros(4, dtype=int), np.array([[2]]), n_langs=1)
    # c3 (0.9) is above; c1 ties and comes earlier in the pool, so it is above too -> rank 3
    assert above[0, 0, 0] == 2
    above = gold_ranks(q, pool, np.zeros(4, dtype=int), np.array([[1]]), n_langs=1)
    assert above[0, 0, 0] == 1  # c2 ties but comes later -> rank 2


def test_settings_on_a_two_language_pool():
    # two questions (ids a, b) in en and de; pool: en0 en1 de0 de1; gold: a->en0/de0, b->en1/de1
    langs = ["de", "en"]
    pool_lang = np.array([1, 1, 0, 0])
    queries = pd.DataFrame({"qid": ["en:a", "de:a"], "lang": ["en", "de"]})
    gold = np.array([[2, 0], [2, 0]])  # slot per language: de gold row, en gold row
    # scores: en:a ranks en1 > de0 > en0 > de1 ; de:a ranks de0 > en0 > de1 > en1
    s = np.array([[0.2, 0.9, 0.5, 0.1], [0.6, 0.1, 0.8, 0.3]], dtype=np.float32)
    q = np.eye(2, dtype=np.float32)
    pool = s.T.copy()
    above = gold_ranks(q, pool, pool_lang, gold, n_langs=2)
    t = per_query_table(queries, langs, above, gold, map_cutoff=2, recall_at=(1,))

    def get(qid, setting):
        return t[(t.qid == qid) & (t.setting == setting)].iloc[0]

    assert get("en:a", "mono")["ap"] == pytest.approx(1 / 2)  # en pool: en1, en0
    assert get("en:a", "cross")["ap"] == pytest.approx(1.0)  # de pool: de0, de1
    m = get("en:a", "multi")  # full ranking en1, de0, en0, de1 -> golds at 2 and 3
    assert m["ap"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["ap@2"] == pytest.approx((1 / 2) / 2)
    assert m["rank_distance"] == 1
    assert get("de:a", "multi")["ap"] == pytest.approx(1.0)  # de0, en0 first
    assert get("de:a", "multi")["r@1"] == pytest.approx(0.5)
    summary = summarise(cell_table(t), unseen={"de"})
    assert summary["mono_map"] == pytest.approx((0.5 + 1.0) / 2)
    assert summary["mono_map_seen"] == pytest.approx(0.5)
    assert summary["mono_map_unseen"] == pytest.approx(1.0)
    assert summary["cross_map_unseen"] == pytest.approx(summary["cross_map"])  # every cross cell involves de
    assert summary["multi_rank_distance"] == pytest.approx(1.0)  # golds adjacent for both queries


def test_unseen_languages_are_the_declared_ones_and_those_not_trained_on():
    """The one rule the score stage and python -m evaluation share."""
    assert unseen_languages(["en", "de", "th"], ["en", "de"]) == {"th"}
    assert unseen_languages(["en", "de", "th"], ["en", "de"], ["de"]) == {"de", "th"}
    assert unseen_languages(["en"], ["en", "de"], ()) == set()
