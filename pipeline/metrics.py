"""LAReQA retrieval metrics from exact gold ranks (see :func:`pipeline.retrieval.gold_ranks`).

Per query, with ``ranks`` the 1-based ranks of its relevant candidates:

* ``average_precision``: mean over relevant items of precision at their rank, over the full
  ranking (LAReQA's mAP): ``mean_i(i / r_(i))`` with ranks sorted.
* ``average_precision_at_k`` (XTREME's mAP@k): the same sum restricted to ``r_(i) <= k``, divided by
  ``min(k, n_relevant)``.
* ``recall_at_k``: share of relevant items ranked in the top ``k``.
* ``rank_distance`` (language bias): largest minus smallest rank of the gold sentences of one
  question in the multilingual pool.

Settings (``../shared/docs/paper.md``): **mono** (query language = pool language, one relevant),
**cross** (query language X, pool restricted to language Y != X, one relevant), **multi** (whole pool;
the question's gold sentence in every language is relevant). Means are per query within a
(query language, pool language) cell, then macro-averaged over cells; cross is macro-averaged over
the ordered language pairs (110 for XQuAD-R). Seen/unseen grouping: a cell is *seen* when all its
languages are training languages, *unseen* otherwise (for multi, by query language).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd


class MetricRangeError(RuntimeError):
    """A rate-type metric (nDCG, recall, mAP) outside [0, 1]: a bug in what produced it, never bad data."""


def check_unit_range(metrics: Mapping[str, float], where: str) -> None:
    """Raise :class:`MetricRangeError` naming ``where`` and the metric when a value of ``metrics`` lies
    outside [0, 1]; NaN (a metric over no query) passes."""
    for name, value in metrics.items():
        if not math.isnan(value) and not 0.0 <= value <= 1.0:
            raise MetricRangeError(f"{where}: {name} = {value!r} lies outside [0, 1]; the scoring is wrong "
                                   "(e.g. a document ranked twice)")


def check_summary(summary: dict, where: str) -> None:
    """Every rate-type metric of a summary (nDCG, recall, mAP, R@k, the index's recall against exact search)
    lies in [0, 1] before it is written; the LAReQA rank distance and the counts are not rates."""

    def is_rate(key: str) -> bool:
        if key.startswith(("ndcg@", "recall@", "index_recall@")):
            return True
        try:
            return metric_source(key)[1] != "rank_distance"
        except ValueError:
            return False

    check_unit_range({k: float(v) for k, v in summary.items() if is_rate(k)}, where)


def unseen_languages(dataset_langs, train_langs, declared=()) -> set[str]:
    """The languages scored as *unseen*: those ``declared`` (params ``score.unseen_languages``) and every
    language of the evaluation set (params ``datasets.<name>.languages``) that is no training language
    (params ``languages``)."""
    return set(declared) | (set(dataset_langs) - set(train_langs))


def average_precision(ranks) -> float:
    r = np.sort(np.asarray(ranks, dtype=np.float64))
    return float(np.mean(np.arange(1, len(r) + 1) / r)) if len(r) else float("nan")


def average_precision_at_k(ranks, k: int) -> float:
    r = np.sort(np.asarray(ranks, dtype=np.float64))
    if not len(r):
        return float("nan")
    hits = np.arange(1, len(r) + 1) / r
    return float(hits[r <= k].sum() / min(k, len(r)))


def recall_at_k(ranks, k: int) -> float:
    r = np.asarray(ranks)
    return float((r <= k).mean()) if len(r) else float("nan")


def rank_distance(ranks) -> float:
    r = np.asarray(ranks)
    return float(r.max() - r.min()) if len(r) > 1 else float("nan")


def per_query_table(queries: pd.DataFrame, langs: list[str], above: np.ndarray, gold: np.ndarray,
                    map_cutoff: int = 20, recall_at=(1, 10)) -> pd.DataFrame:
    """One row per (query, setting, pool language) with ``ap``, ``ap@k``, ``r@k`` and, for multi, ``rank_distance``.

    ``queries`` has ``qid`` and ``lang``; ``above``/``gold`` come from :func:`pipeline.retrieval.gold_ranks`
    with one gold slot per language of ``langs`` (slot ``l`` = the question's gold in language ``l``).
    """
    rows = []
    lang_ix = {l: i for i, l in enumerate(langs)}
    for q, (qid, qlang) in enumerate(zip(queries["qid"], queries["lang"], strict=True)):
        x = lang_ix[qlang]
        present = [l for l in range(len(langs)) if gold[q, l] >= 0]
        for y in present:  # mono (y == x) and cross (y != x): pool restricted to language y
            r = [above[q, y, y] + 1]
            rows.append(_row(qid, qlang, "mono" if y == x else "cross", langs[y], r, map_cutoff, recall_at))
        multi = [above[q, l].sum() + 1 for l in present]
        row = _row(qid, qlang, "multi", "all", multi, map_cutoff, recall_at)
        row["rank_distance"] = rank_distance(multi)
        rows.append(row)
    return pd.DataFrame(rows)


def _row(qid, qlang, setting, pool_lang, ranks, k, recall_at) -> dict:
    row = {"qid": qid, "query_lang": qlang, "setting": setting, "pool_lang": pool_lang,
           "ap": average_precision(ranks), f"ap@{k}": average_precision_at_k(ranks, k)}
    for n in recall_at:
        row[f"r@{n}"] = recall_at_k(ranks, n)
    return row


def cell_table(per_query: pd.DataFrame) -> pd.DataFrame:
    """Mean of every metric per (setting, query language, pool language), with the query count."""
    metric_cols = [c for c in per_query.columns if c not in ("qid", "query_lang", "setting", "pool_lang")]
    g = per_query.groupby(["setting", "query_lang", "pool_lang"], sort=True)
    out = g[metric_cols].mean()
    out["queries"] = g.size()
    return out.reset_index()


def summarise(cells: pd.DataFrame, unseen: set[str] | frozenset = frozenset()) -> dict[str, float]:
    """Flat headline metrics: ``{setting}_{metric}`` macro-averaged over cells, also ``_seen``/``_unseen``."""
    metric_cols = [c for c in cells.columns if c not in ("setting", "query_lang", "pool_lang", "queries")]
    out: dict[str, float] = {}
    for setting, grp in cells.groupby("setting", sort=False):
        langs = grp[["query_lang", "pool_lang"]].apply(lambda r: {r.query_lang, r.pool_lang} - {"all"}, axis=1)
        is_unseen = langs.apply(lambda s: bool(s & set(unseen)))
        groups = {"": grp, "_seen": grp[~is_unseen], "_unseen": grp[is_unseen]}
        for suffix, part in groups.items():
            if suffix and (part.empty or not unseen):
                continue
            for m in metric_cols:
                vals = part[m].dropna()
                if len(vals):
                    out[f"{setting}_{_metric_name(m)}{suffix}"] = round(float(vals.mean()), 6)
    return dict(sorted(out.items(), key=lambda kv: (["mono", "cross", "multi"].index(kv[0].split("_")[0]), kv[0])))


def _metric_name(col: str) -> str:
    """Column name -> metric key: ``ap`` -> ``map``, ``ap@20`` -> ``map20``, ``r@1`` -> ``r1``."""
    if col == "ap" or col.startswith("ap@"):
        col = "m" + col
    return col.replace("@", "")


def headline_metrics(recall_at=(1, 10)) -> tuple[str, ...]:
    """The headline metric keys for the recall cut-offs ``recall_at`` (``score.recall_at``): mAP of each
    setting, R@(smallest cut-off) for mono and cross, R@(largest) for multi, and the multi rank distance."""
    lo, hi = min(recall_at), max(recall_at)
    return ("mono_map", "cross_map", "multi_map", f"mono_r{lo}", f"cross_r{lo}", f"multi_r{hi}", "multi_rank_distance")


def declared_metrics(summary: dict, recall_at=(1, 10)) -> dict:
    """The part of a :func:`score` summary a DVC experiment table shows: the headline metrics
    (:func:`headline_metrics`), each also for seen and unseen languages, and the set's size. The rest
    (mAP@k, every R@k of every setting) stays in the full summary beside the per-query scores."""
    keep = [k + g for k in headline_metrics(recall_at) for g in ("", "_seen", "_unseen")]
    keep += ["queries", "pool", "languages"]
    return {k: summary[k] for k in keep if k in summary}


def metric_source(key: str) -> tuple[str, str, str | None]:
    """``(setting, per-query column, group)`` of a summary key ``{setting}_{metric}[_seen|_unseen]``:
    ``multi_map20_seen`` -> ``("multi", "ap@20", "seen")``, ``mono_r1`` -> ``("mono", "r@1", None)``."""
    setting, _, name = key.partition("_")
    group = None
    for g in ("seen", "unseen"):
        if name.endswith("_" + g):
            name, group = name[: -len(g) - 1], g
    if setting not in ("mono", "cross", "multi") or not name:
        raise ValueError(f"{key!r} is not a metric key ({{mono|cross|multi}}_{{map|mapK|rK|rank_distance}})")
    if name == "rank_distance":
        column = name
    elif name == "map":
        column = "ap"
    elif name.startswith("map") and name[3:].isdigit():
        column = f"ap@{name[3:]}"
    elif name.startswith("r") and name[1:].isdigit():
        column = f"r@{name[1:]}"
    else:
        raise ValueError(f"{key!r} is not a metric key ({{mono|cross|multi}}_{{map|mapK|rK|rank_distance}})")
    return setting, column, group


def language_table(cells: pd.DataFrame, recall_at=(1, 10)) -> pd.DataFrame:
    """Per query language: the headline metrics (:func:`headline_metrics`); cross is the mean over pool languages."""
    rows = {"mono": cells[cells.setting == "mono"].set_index("query_lang"),
            "cross": cells[cells.setting == "cross"].groupby("query_lang").mean(numeric_only=True),
            "multi": cells[cells.setting == "multi"].set_index("query_lang")}
    table = {}
    for key in headline_metrics(recall_at):
        setting, column, _ = metric_source(key)
        table["rank_distance" if column == "rank_distance" else key] = rows[setting][column]
    table = pd.DataFrame(table)
    table.index.name = "lang"
    return table.reset_index().round(6)


def score_embeddings(emb_dir, map_cutoff: int = 20, recall_at=(1, 10), unseen=()):
    """Score the embeddings folder written by the ``index`` stage (see :func:`score`)."""
    from pathlib import Path

    from .io import read_parquet

    emb_dir = Path(emb_dir)
    return score(read_parquet(emb_dir / "queries.parquet", required=["qid", "id", "lang", "gold"]),
                 read_parquet(emb_dir / "pool.parquet", required=["cand_id", "lang"]),
                 np.load(emb_dir / "queries.npy"), np.load(emb_dir / "pool.npy"), map_cutoff, recall_at, unseen)


def score(queries: pd.DataFrame, pool: pd.DataFrame, qv: np.ndarray, pv: np.ndarray, map_cutoff: int = 20,
          recall_at=(1, 10), unseen=()) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every metric of every setting: ``(summary, language table, cells, per-query table)``.

    ``queries`` (qid, id, lang, gold) and ``pool`` (cand_id, lang) are row-aligned with the vectors.
    """
    from .retrieval import gold_ranks

    langs = sorted(pool["lang"].unique())
    lang_ix = {l: i for i, l in enumerate(langs)}
    row_of = pd.Series(np.arange(len(pool)), index=pool["cand_id"])
    # gold[q, l]: pool row of question q's answer sentence in language l (-1 if the question lacks l)
    gold_of_id = queries.assign(row=row_of[queries["gold"]].to_numpy()).pivot(index="id", columns="lang", values="row")
    gold_of_id = gold_of_id.reindex(columns=langs).fillna(-1).astype(np.int64)
    gold = gold_of_id.loc[queries["id"]].to_numpy()
    above = gold_ranks(qv, pv, pool["lang"].map(lang_ix).to_numpy(), gold, len(langs))
    per_query = per_query_table(queries, langs, above, gold, map_cutoff, recall_at)
    cells = cell_table(per_query)
    summary = summarise(cells, set(unseen))
    summary.update({"queries": int(len(queries)), "pool": int(len(pool)), "languages": len(langs)})
    return summary, language_table(cells, recall_at), cells, per_query
