"""The development set: held-out training questions, scored as LAReQA retrieval to select checkpoints.

Model selection must not depend on the strategy being compared. So the dev set is made once, from
the filtered pairs, before any batch is built: ``dev.fraction`` of the question ids (``pair_id``),
with every language they exist in, drawn with ``dev.seed`` (not the run's ``seed``). Every mode,
alpha and seed therefore trains on the same remaining pairs and is judged on the same dev rows.

The dev set is a small LAReQA-style retrieval problem in the training languages:

* **queries**: one per held-out ``(pair_id, lang)`` row; ``qid = {lang}:{pair_id}``, ``id = pair_id``;
* **pool**: per language, the answer sentences of the held-out rows plus the other sentences of their
  paragraphs (``context``, split with :func:`pipeline.text.sentence_spans`, when the pairs carry one;
  a paragraph sentence overlapping the answer sentence is left out so that no near-copy of the gold
  competes with it), each distinct text once; ``cand_id = {lang}:{n}``;
* **gold**: the candidate holding the row's passage.

:func:`pipeline.metrics.score` scores it exactly like XQuAD-R (mono, cross, multi mAP, ...), and
:func:`dev_score` reduces that to the selection criterion (see its docstring for why).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import PipelineError
from .text import sentence_spans

QUERY_COLUMNS = ["qid", "id", "lang", "text", "gold"]
POOL_COLUMNS = ["cand_id", "lang", "text"]
SPLIT_STREAM = 0
# the dev-set criterion: equal weight to the three settings the paper optimises simultaneously
DEV_METRICS = ("mono_map", "cross_map", "multi_map")


class DevSetError(PipelineError, ValueError):
    """The pairs cannot give a dev set (too few ids or languages); the message says why."""


def split_pairs(pairs: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, dev)``: hold out ``fraction`` of the pair_ids with all their languages.

    The held-out ids depend only on the set of pair_ids, ``fraction`` and ``seed`` (not on row
    order); at least one id is held out and at least one kept. Both parts keep the input row order.
    """
    ids = np.array(sorted(pairs["pair_id"].astype(str).unique()), dtype=object)
    if len(ids) < 2:
        raise DevSetError(f"a dev set needs two or more question ids; the pairs have {len(ids)}")
    n_dev = min(max(int(round(fraction * len(ids))), 1), len(ids) - 1)
    held = set(np.random.Generator(np.random.PCG64([seed, SPLIT_STREAM])).permutation(ids)[:n_dev].tolist())
    is_dev = pairs["pair_id"].astype(str).isin(held)
    return pairs.loc[~is_dev], pairs.loc[is_dev]


def _paragraph_sentences(context, passage: str) -> list[str]:
    """Sentences of ``context`` other than the answer sentence ``passage`` (and any overlapping it)."""
    if not isinstance(context, str) or not context.strip() or context in ("None", "nan"):
        return []
    spans = sentence_spans(context)
    at = context.find(passage) if passage else -1
    out = []
    for a, b in spans:
        text = context[a:b].strip()
        if at >= 0 and a < at + len(passage) and at < b:
            continue  # overlaps the answer sentence
        if text and text != passage:
            out.append(text)
    return out


def retrieval_set(dev: pd.DataFrame, languages: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(queries, pool)`` of the dev pairs in ``languages`` (see the module docstring)."""
    rows = dev.loc[dev["lang"].isin(languages)].copy()
    rows["pair_id"] = rows["pair_id"].astype(str)
    rank = {lang: i for i, lang in enumerate(languages)}
    rows = rows.sort_values(["pair_id", "lang"], key=lambda c: c.map(rank) if c.name == "lang" else c, kind="stable")
    if rows.empty:
        raise DevSetError(f"the dev pairs have no rows in the training languages {languages}")
    cand: dict[tuple[str, str], str] = {}
    count: dict[str, int] = {}
    pool: list[dict] = []

    def add(lang: str, text: str) -> str:
        key = (lang, text)
        if key not in cand:
            count[lang] = count.get(lang, 0) + 1
            cand[key] = f"{lang}:{count[lang] - 1}"
            pool.append({"cand_id": cand[key], "lang": lang, "text": text})
        return cand[key]

    queries = []
    context = rows["context"] if "context" in rows.columns else pd.Series([None] * len(rows), index=rows.index)
    for (pid, lang, question, passage), ctx in zip(rows[["pair_id", "lang", "question", "passage"]].itertuples(
            index=False, name=None), context, strict=True):
        gold = add(lang, passage)
        for sentence in _paragraph_sentences(ctx, passage):
            add(lang, sentence)
        queries.append({"qid": f"{lang}:{pid}", "id": pid, "lang": lang, "text": question, "gold": gold})
    q = pd.DataFrame(queries, columns=QUERY_COLUMNS)
    p = pd.DataFrame(pool, columns=POOL_COLUMNS)
    p["_lang"] = p["lang"].map(rank)
    p = p.sort_values("_lang", kind="stable").drop(columns="_lang").reset_index(drop=True)
    return q, p


def dev_score(summary: dict) -> float:
    """The selection criterion: the mean of mono, cross and multi mAP on the dev set.

    Each strategy is built to win one setting (X-X mono, X-Y cross and multi); a criterion on one
    setting would favour the strategy that trains for it, and a loss in the run's own batch mode
    (the old rule) is not comparable across modes at all. The unweighted mean of the three
    settings asks every run the paper's question: all three at once. Cross is undefined with one
    language; then the mean is over the settings present.
    """
    vals = [summary[k] for k in DEV_METRICS if k in summary and summary[k] is not None]
    if not vals:
        raise DevSetError(f"the dev scores have none of {DEV_METRICS}")
    return round(float(np.mean(vals)), 6)


def statistics(train: pd.DataFrame, dev: pd.DataFrame, queries: pd.DataFrame, pool: pd.DataFrame) -> dict:
    """Sizes of the split and of the dev retrieval set, per language."""
    return {
        "train_pair_ids": int(train["pair_id"].nunique()), "train_rows": int(len(train)),
        "dev_pair_ids": int(dev["pair_id"].nunique()), "dev_rows": int(len(dev)),
        "dev_queries": {k: int(v) for k, v in queries.groupby("lang", sort=False).size().items()},
        "dev_pool": {k: int(v) for k, v in pool.groupby("lang", sort=False).size().items()},
    }
