"""Language-aware hard negatives: mine them once, pick them per batch row by a language policy.

**Mining** (:func:`mine_negatives`, the ``mine`` stage) embeds every training question and every
distinct training passage (one pool per language) and ranks, for each question ``(pair_id, L_q)`` and
each training language ``L_t``, the ``L_t`` pool by cosine similarity. It keeps up to ``per_pair``
candidates per ``(pair_id, L_q, L_t)``, best first, that

- sit in the rank range ``[lo, hi]`` of that ranking (1 = the most similar passage), so the very top,
  where unlabelled positives and near-duplicates live, is skipped;
- score at most ``positive - margin``, where ``positive`` is the question's score against its own gold
  passage in ``L_t`` (or in ``L_q`` when the pair has no ``L_t`` translation);
- are not *the same answer*: passages are grouped (:func:`answer_groups`) so that every translation
  of a pair's passage, and every pair that shares a passage text with it in any language (two
  questions on one sentence), fall in one group; a candidate of the question's own group is never
  kept, so no negative is a translation of the gold nor gold for another translation of the query.

A ``(question, language)`` with no admissible candidate gets none (counted in the statistics), never
a worse one. Mining does not depend on the batch strategy or the seed, so DVC mines once for all of them.

**Picking** (:class:`NegativePicker`, used by :mod:`pipeline.batching`) happens when a batch row
``(pair_id, query language, passage language)`` is known, by ``mining.language``:
``query`` takes negatives in the query's language, ``passage`` in the positive passage's language,
``other`` in a third language (neither), ``any`` in any language; within the allowed languages the
highest-scoring ``per_pair`` candidates are taken (ties: language, then rank). No randomness is used, so
a run with hard negatives has exactly the batches of the same run without them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import DataError

NEGATIVE_COLUMNS = ["pair_id", "query_lang", "negative_lang", "negative", "negative_group", "rank", "score",
                    "positive_score"]
POLICIES = ("query", "passage", "other", "any")


def answer_groups(pairs: pd.DataFrame) -> dict:
    """``pair_id -> group`` (the smallest pair_id of the group): pairs are joined when they share a
    passage text in some language, transitively (union-find). Translations of one pair share its
    pair_id, so a group is every passage that answers the same question in any language."""
    parent: dict = {pid: pid for pid in pairs["pair_id"].unique().tolist()}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _, ids in pairs.groupby(["lang", "passage"], sort=True)["pair_id"]:
        ids = sorted(ids.unique().tolist())
        for other in ids[1:]:
            a, b = find(ids[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = {pid: find(pid) for pid in parent}
    smallest: dict = {}
    for pid, root in roots.items():
        smallest[root] = min(smallest.get(root, pid), pid)
    return {pid: smallest[root] for pid, root in sorted(roots.items())}


def passage_pool(pairs: pd.DataFrame, groups: dict) -> pd.DataFrame:
    """Distinct ``(lang, passage)`` of ``pairs`` with their answer group, sorted by language then text."""
    pool = pairs[["lang", "passage", "pair_id"]].sort_values(["lang", "passage", "pair_id"], kind="stable")
    pool = pool.drop_duplicates(["lang", "passage"]).reset_index(drop=True)
    pool["group"] = pool["pair_id"].map(groups)
    return pool[["lang", "passage", "group"]]


def question_table(pairs: pd.DataFrame, groups: dict) -> pd.DataFrame:
    """One row per ``(pair_id, lang)`` question, sorted, with its answer group."""
    q = pairs[["pair_id", "lang", "question", "passage"]].sort_values(["pair_id", "lang"], kind="stable")
    q = q.reset_index(drop=True)
    q["group"] = q["pair_id"].map(groups)
    return q


def check_settings(rank_range, margin: float, per_pair: int) -> tuple[int, int]:
    lo, hi = (int(x) for x in rank_range)
    if not 1 <= lo <= hi:
        raise DataError(f"mining.rank_range: {list(rank_range)} must be [lo, hi] with 1 <= lo <= hi")
    if per_pair < 1:
        raise DataError(f"mining.per_pair: {per_pair} must be >= 1")
    return lo, hi


def mine_negatives(questions: pd.DataFrame, qv: np.ndarray, pool: pd.DataFrame, pv: np.ndarray,
                   rank_range=(10, 100), margin: float = 0.0, per_pair: int = 1) -> pd.DataFrame:
    """Candidates (:data:`NEGATIVE_COLUMNS`) for every question of ``questions`` (:func:`question_table`,
    vectors ``qv``) in every language of ``pool`` (:func:`passage_pool`, vectors ``pv``); vectors are
    L2-normalised rows. See the module docstring for the rules. Deterministic: ties in score are
    broken by pool order."""
    lo, hi = check_settings(rank_range, margin, per_pair)
    if len(questions) != len(qv) or len(pool) != len(pv):
        raise ValueError("questions/pool and their vectors differ in length")
    index = {(lang, text): i for i, (lang, text) in enumerate(zip(pool["lang"], pool["passage"], strict=True))}
    gold_of = questions.groupby("pair_id")[["lang", "passage"]].apply(
        lambda g: dict(zip(g["lang"], g["passage"], strict=True))).to_dict()
    q_groups = questions["group"].to_numpy()
    rows = []
    for lang, part in pool.groupby("lang", sort=True):
        idx = part.index.to_numpy()
        scores = qv @ pv[idx].T  # (questions, pool in lang)
        order = np.argsort(-scores, axis=1, kind="stable")[:, lo - 1 : hi]
        p_groups = part["group"].to_numpy()
        texts = part["passage"].tolist()
        for i, (pid, q_lang) in enumerate(zip(questions["pair_id"], questions["lang"], strict=True)):
            gold = gold_of[pid]
            pos_text = gold.get(lang, gold[q_lang])
            pos_lang = lang if lang in gold else q_lang
            positive = float(qv[i] @ pv[index[(pos_lang, pos_text)]])
            kept = 0
            for r, j in enumerate(order[i], start=lo):
                if p_groups[j] == q_groups[i] or scores[i, j] > positive - margin:
                    continue
                rows.append((pid, q_lang, lang, texts[j], p_groups[j], r, float(scores[i, j]), positive))
                kept += 1
                if kept == per_pair:
                    break
    out = pd.DataFrame(rows, columns=NEGATIVE_COLUMNS)
    out = out.astype({"rank": "int64", "score": "float32", "positive_score": "float32"})
    return out.sort_values(["pair_id", "query_lang", "negative_lang", "rank"], kind="stable").reset_index(drop=True)


def empty_negatives() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
        NEGATIVE_COLUMNS, ["object", "object", "object", "object", "object", "int64", "float32", "float32"],
        strict=True)})


def mining_statistics(negatives: pd.DataFrame, questions: pd.DataFrame, languages: list[str],
                      rank_range, bins: int = 9) -> dict:
    """Negatives per language, a rank histogram over ``rank_range`` and the share of questions (and of
    (question, language) cells) left without a negative."""
    lo, hi = (int(x) for x in rank_range)
    n_q = len(questions)
    have = negatives.groupby(["pair_id", "query_lang"])["negative_lang"].nunique()
    edges = np.unique(np.linspace(lo, hi + 1, bins + 1).round().astype(int))
    counts, _ = np.histogram(negatives["rank"].to_numpy(), bins=edges)
    return {
        "questions": int(n_q),
        "negatives": int(len(negatives)),
        "negatives_per_language": {lang: int((negatives["negative_lang"] == lang).sum()) for lang in languages},
        "questions_without_negative_share": round(1 - len(have) / n_q, 6) if n_q else None,
        "cells_without_negative_share": (round(1 - int(have.sum()) / (n_q * len(languages)), 6)
                                         if n_q and languages else None),
        "rank_histogram": {f"{a}-{b - 1}": int(c) for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)},
        "mean_score_gap": (round(float((negatives["positive_score"] - negatives["score"]).mean()), 6)
                           if len(negatives) else None),
    }


class NegativePicker:
    """Hard negatives of a batch row by language policy, from the mined candidates."""

    def __init__(self, negatives: pd.DataFrame, groups: dict, policy: str, per_pair: int):
        if policy not in POLICIES:
            raise ValueError(f"mining.language must be one of {POLICIES}, got {policy!r}")
        self.policy, self.per_pair, self.groups = policy, per_pair, groups
        self.by_query: dict[tuple, list[tuple]] = {}
        for pid, q_lang, n_lang, text, group, rank, score in zip(
                negatives["pair_id"], negatives["query_lang"], negatives["negative_lang"], negatives["negative"],
                negatives["negative_group"], negatives["rank"], negatives["score"], strict=True):
            self.by_query.setdefault((pid, q_lang), []).append((-float(score), n_lang, int(rank), text, group))
        for cands in self.by_query.values():
            cands.sort()

    def allowed(self, lang: str, q_lang: str, p_lang: str) -> bool:
        if self.policy == "query":
            return lang == q_lang
        if self.policy == "passage":
            return lang == p_lang
        if self.policy == "other":
            return lang not in (q_lang, p_lang)
        return True

    def candidates(self, pair_id, q_lang: str, p_lang: str) -> list[tuple[str, object, str]]:
        """``(text, group, lang)`` of the row's admissible candidates, best first."""
        return [(text, group, lang) for _, lang, _, text, group in self.by_query.get((pair_id, q_lang), [])
                if self.allowed(lang, q_lang, p_lang)]


def attach_negatives(batch: pd.DataFrame, picker: NegativePicker) -> tuple[list[list[str]], list[list[str]], int]:
    """Hard negatives of each row of one batch (rows in order): up to ``per_pair`` per row from
    :meth:`NegativePicker.candidates`, leaving out any whose answer group is that of a row of the batch
    (it would be gold for that row's query) or whose text is a passage or an earlier negative of the
    batch. Returns ``(texts per row, languages per row, candidates left out)``."""
    row_groups = {picker.groups.get(pid, pid) for pid in batch["pair_id"]}
    used = set(batch["passage"])
    texts, langs, dropped = [], [], 0
    for pid, q_lang, p_lang in zip(batch["pair_id"], batch["query_lang"], batch["passage_lang"], strict=True):
        mine_t, mine_l = [], []
        for text, group, lang in picker.candidates(pid, q_lang, p_lang):
            if len(mine_t) == picker.per_pair:
                break
            if group in row_groups or text in used:
                dropped += 1
                continue
            used.add(text)
            mine_t.append(text)
            mine_l.append(lang)
        texts.append(mine_t)
        langs.append(mine_l)
    return texts, langs, dropped
