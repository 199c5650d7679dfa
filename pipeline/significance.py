"""Paired bootstrap confidence intervals for the difference between two runs (beyond the paper).

Both runs are per-query tables written by the ``score`` stage (``data/scores/<dataset>/per_query.parquet``:
one row per query, setting and pool language). A bootstrap sample draws *questions* (the ``id``
shared by a question's translations) with replacement and reweights every cell of both runs with the
same draw, so the interval accounts for the pairing of the runs and for the correlation between a
question's languages. Each replicate recomputes the headline metric exactly as ``score`` does: the
mean per (setting, query language, pool language) cell, macro-averaged over cells.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

HEADLINE = {
    "mono_map": ("mono", "ap"), "cross_map": ("cross", "ap"), "multi_map": ("multi", "ap"),
    "mono_map20": ("mono", "ap@20"), "cross_map20": ("cross", "ap@20"), "multi_map20": ("multi", "ap@20"),
    "mono_r1": ("mono", "r@1"), "cross_r1": ("cross", "r@1"), "multi_r10": ("multi", "r@10"),
    "multi_rank_distance": ("multi", "rank_distance"),
}


def _matrix(per_query: pd.DataFrame, setting: str, column: str, ids: pd.Index) -> np.ndarray:
    """``(n_ids, n_cells)`` values of one metric, NaN where a question lacks a cell."""
    d = per_query[per_query["setting"] == setting]
    d = d.assign(id=d["qid"].str.split(":", n=1).str[1], cell=d["query_lang"] + ">" + d["pool_lang"])
    return d.pivot_table(index="id", columns="cell", values=column, aggfunc="first").reindex(ids).to_numpy()


def headline(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro average over cells of the weighted per-cell means; ``weights`` is ``(n_boot, n_ids)``."""
    mask = ~np.isnan(values)
    sums = weights @ np.where(mask, values, 0.0)
    counts = weights @ mask
    return np.nanmean(sums / np.where(counts > 0, counts, np.nan), axis=1)


def paired_bootstrap(a: pd.DataFrame, b: pd.DataFrame, metrics=tuple(HEADLINE), n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Difference ``b - a`` per headline metric with a percentile bootstrap interval.

    Returns one row per metric: ``a``, ``b``, ``diff``, ``low``, ``high`` and ``p_le_0`` (share of
    replicates where the difference is <= 0: small means b is reliably higher).
    """
    ids = pd.Index(sorted(set(a["qid"].str.split(":", n=1).str[1])))
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=n_boot).astype(np.float64)
    ones = np.ones((1, len(ids)))
    rows = []
    for name in metrics:
        setting, column = HEADLINE[name]
        va, vb = _matrix(a, setting, column, ids), _matrix(b, setting, column, ids)
        if va.shape != vb.shape:
            raise ValueError(f"{name}: the two runs do not cover the same cells ({va.shape} vs {vb.shape})")
        point_a, point_b = headline(va, ones)[0], headline(vb, ones)[0]
        diffs = headline(vb, weights) - headline(va, weights)
        lo, hi = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
        rows.append({"metric": name, "a": point_a, "b": point_b, "diff": point_b - point_a,
                     "low": lo, "high": hi, "p_le_0": float((diffs <= 0).mean())})
    return pd.DataFrame(rows)
