"""Hard-negative mining and picking on a hand-made pool with known translations."""
import hashlib

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.batching import assemble, with_hard_negatives
from pipeline.io import write_parquet
from pipeline.loss import info_nce
from pipeline.mining import (NEGATIVE_COLUMNS, NegativePicker, answer_groups, attach_negatives, mine_negatives,
                             mining_statistics, passage_pool, question_table)
from pipeline.params import SamplingParams

LANGS = ["en", "de", "zh"]


def toy_pairs(n: int = 12) -> pd.DataFrame:
    """Pair i in en/de/zh; p01 shares its passage with p00 in every language (two questions on one
    sentence), so both are one answer group; p11 has no zh row."""
    rows = []
    for i in range(n):
        for lang in LANGS:
            if i == n - 1 and lang == "zh":
                continue
            k = 0 if i == 1 else i
            rows.append({"pair_id": f"p{i:02d}", "lang": lang, "question": f"{lang} q{i}", "passage": f"{lang} s{k}"})
    return pd.DataFrame(rows)


def toy_vectors(questions, pool, dim: int = 16, seed: int = 0):
    """A pair's question and its passages in every language point the same way (a good encoder);
    pairs p00-p05 are close to each other (a topic), so they are each other's hard candidates."""
    rng = np.random.default_rng(seed)
    topic = rng.normal(size=dim)
    base = {}
    for i in range(12):
        v = rng.normal(size=dim) + (3 * topic if i < 6 else 0)
        base[f"s{i}"] = v
    base["s1"] = base["s0"]

    def unit(x):
        return (x / np.linalg.norm(x)).astype(np.float32)

    qv = np.stack([unit(base[f"s{0 if p == 'p01' else int(p[1:])}"] + 0.3 * rng.normal(size=dim))
                   for p in questions["pair_id"]])
    pv = np.stack([unit(base[t.split()[1]] + 0.1 * rng.normal(size=dim)) for t in pool["passage"]])
    return qv, pv


@pytest.fixture()
def mined():
    pairs = toy_pairs()
    groups = answer_groups(pairs)
    questions, pool = question_table(pairs, groups), passage_pool(pairs, groups)
    qv, pv = toy_vectors(questions, pool)
    return pairs, groups, questions, pool, qv, pv


def test_answer_groups_join_translations_and_shared_passages():
    groups = answer_groups(toy_pairs())
    assert groups["p00"] == groups["p01"] == "p00"
    assert len(set(groups.values())) == 11 and groups["p11"] == "p11"


def test_no_negative_is_an_answer_of_the_question_in_any_language(mined):
    pairs, groups, questions, pool, qv, pv = mined
    neg = mine_negatives(questions, qv, pool, pv, rank_range=(1, 12), margin=0.0, per_pair=3)
    assert list(neg.columns) == NEGATIVE_COLUMNS and len(neg)
    gold_texts = pairs.groupby("pair_id")["passage"].apply(set).to_dict()
    for pid, text, group in zip(neg["pair_id"], neg["negative"], neg["negative_group"], strict=True):
        assert group != groups[pid]
        assert text not in gold_texts[pid]  # never the gold nor a translation of it
        if pid in ("p00", "p01"):  # the shared sentence is gold for both questions: never a negative of either
            assert text not in gold_texts["p00"] | gold_texts["p01"]
    # each candidate's language is the pool it was ranked in, and its text belongs to that pool
    pool_langs = dict(zip(pool["passage"], pool["lang"], strict=True))
    assert (neg["negative"].map(pool_langs) == neg["negative_lang"]).all()


def test_rank_range_margin_and_per_pair_are_obeyed(mined):
    _, _, questions, pool, qv, pv = mined
    neg = mine_negatives(questions, qv, pool, pv, rank_range=(3, 6), margin=0.05, per_pair=2)
    assert neg["rank"].between(3, 6).all()
    assert (neg["score"] <= neg["positive_score"] - 0.05 + 1e-6).all()
    assert neg.groupby(["pair_id", "query_lang", "negative_lang"]).size().max() <= 2
    # the rank is the candidate's position in its language's ranking for that question, recomputed here
    for _, r in neg.sample(10, random_state=0).iterrows():
        i = questions.index[(questions["pair_id"] == r["pair_id"]) & (questions["lang"] == r["query_lang"])][0]
        idx = pool.index[pool["lang"] == r["negative_lang"]]
        order = idx[np.argsort(-(pv[idx] @ qv[i]), kind="stable")]
        assert pool.loc[order[r["rank"] - 1], "passage"] == r["negative"]


def test_a_question_with_no_admissible_candidate_gets_none_and_is_counted(mined):
    _, _, questions, pool, qv, pv = mined
    # a margin no candidate can meet: nothing mined, every question counted as without one
    none = mine_negatives(questions, qv, pool, pv, rank_range=(1, 12), margin=2.0)
    assert none.empty
    stats = mining_statistics(none, questions, LANGS, (1, 12))
    assert stats["questions_without_negative_share"] == 1.0 and stats["negatives"] == 0
    # rank range [1, 1]: only the top passage, which for most questions is their own gold -> no candidate
    top = mine_negatives(questions, qv, pool, pv, rank_range=(1, 1), margin=0.0)
    stats = mining_statistics(top, questions, LANGS, (1, 1))
    assert 0 < stats["cells_without_negative_share"] <= 1
    assert stats["negatives"] == len(top) and sum(stats["rank_histogram"].values()) == len(top)


def test_mining_is_deterministic_to_the_byte(mined, tmp_path):
    _, _, questions, pool, qv, pv = mined
    digests = []
    for name in ("a", "b"):
        neg = mine_negatives(questions, qv.copy(), pool, pv.copy(), rank_range=(2, 10), margin=0.01, per_pair=2)
        write_parquet(tmp_path / f"{name}.parquet", neg)
        digests.append(hashlib.sha256((tmp_path / f"{name}.parquet").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


@pytest.mark.parametrize("policy", ["query", "passage", "other", "any"])
def test_the_language_policy_decides_the_negatives_language(mined, policy):
    pairs, groups, questions, pool, qv, pv = mined
    neg = mine_negatives(questions, qv, pool, pv, rank_range=(1, 12), margin=0.0, per_pair=2)
    picker = NegativePicker(neg, groups, policy, per_pair=2)
    for q_lang, p_lang in (("de", "zh"), ("en", "en")):
        cands = picker.candidates("p03", q_lang, p_lang)
        langs = {lang for _, _, lang in cands}
        assert cands, (q_lang, p_lang)
        expected = {"query": {q_lang}, "passage": {p_lang}, "other": set(LANGS) - {q_lang, p_lang},
                    "any": set(LANGS)}[policy]
        assert langs <= expected
        mine = neg[(neg["pair_id"] == "p03") & (neg["query_lang"] == q_lang)]
        score = dict(zip(mine["negative"], mine["score"], strict=True))
        got = [score[t] for t, _, _ in cands]
        assert got == sorted(got, reverse=True)  # best first, across the allowed languages
        if policy == "any":
            assert len(cands) == len(mine)
    with pytest.raises(ValueError, match="mining.language"):
        NegativePicker(neg, groups, "same", 1)


def test_in_batch_guard_leaves_out_negatives_that_are_gold_for_another_row(mined):
    pairs, groups, questions, pool, qv, pv = mined
    neg = mine_negatives(questions, qv, pool, pv, rank_range=(1, 12), margin=0.0, per_pair=3)
    picker = NegativePicker(neg, groups, "any", per_pair=3)
    cands = picker.candidates("p02", "de", "zh")
    other_group = cands[0][1]  # p02's best candidate belongs to this answer group: put that pair in the batch
    other_pid = next(p for p, g in groups.items() if g == other_group)
    batch = pd.DataFrame({"pair_id": ["p02", other_pid], "query_lang": ["de", "en"], "passage_lang": ["zh", "de"],
                          "passage": ["zh s2", pairs.loc[(pairs.pair_id == other_pid) & (pairs.lang == "de"),
                                                          "passage"].iloc[0]]})
    texts, langs, dropped = attach_negatives(batch, picker)
    batch_groups = {groups[p] for p in batch["pair_id"]}
    by_text = dict(zip(neg["negative"], neg["negative_group"], strict=False))
    for row in texts:
        assert all(by_text[t] not in batch_groups for t in row)
    assert dropped >= 1 and cands[0][0] not in texts[0]
    flat = [t for row in texts for t in row]
    assert len(flat) == len(set(flat)) and not set(flat) & set(batch["passage"])


def test_hard_negatives_leave_the_batches_as_they_were(mined):
    pairs, groups, questions, pool, qv, pv = mined
    neg = mine_negatives(questions, qv, pool, pv, rank_range=(1, 12), margin=0.0, per_pair=1)
    sampling = SamplingParams(mode="hybrid", alpha=0.5, batch_size=4, batches=6)
    plain, _ = assemble(pairs, pairs.iloc[0:0], LANGS, sampling, 13)
    withneg, _ = with_hard_negatives(plain, NegativePicker(neg, groups, "query", 1))
    pd.testing.assert_frame_equal(withneg[plain.columns], plain)
    for q_lang, langs in zip(withneg["query_lang"], withneg["negative_langs"], strict=True):
        assert set(langs) <= {q_lang} and len(langs) <= 1
    assert withneg["hard_negatives"].apply(len).sum() > 0


def test_a_training_step_with_hard_negatives_matches_the_hand_computed_loss():
    """InfoNCE over [positives | hard negatives] on tiny tensors, checked against the formula by hand:
    rows score 2 positives' columns and 3 hard negatives (any number, not one per row)."""
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])
    hn = torch.tensor([[1.0, 0.0], [0.0, -1.0], [1.0, -1.0]])
    scale = 2.0
    got = info_nce(q, p, scale, hn).item()

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True)) / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b)
                                                                ** 0.5)
    cols = p.tolist() + hn.tolist()
    expected = 0.0
    for i, qi in enumerate(q.tolist()):
        logits = [scale * cos(qi, c) for c in cols]
        expected += -logits[i] + np.log(sum(np.exp(x) for x in logits))
    assert got == pytest.approx(expected / 2, abs=1e-6)
