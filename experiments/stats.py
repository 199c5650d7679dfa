"""Statistics of a grid across seeds: summaries, seed-and-question bootstrap intervals, verdicts, findings.

For each experiment a grid keeps the headline metrics of ``metrics/<dataset>.json``, the kept step and rule of
``metrics/train.json`` and the per-query scores (``data/scores/<dataset>/per_query.parquet``); this module turns
them into numbers (:mod:`experiments.report` writes them as files).

**Intervals that cover training randomness.** A bootstrap over questions alone treats one trained
model as fixed; with a few hundred training steps, another seed moves mAP by more than that interval.
:func:`seed_question_bootstrap` resamples both levels: each replicate draws the seeds of each strategy
with replacement (independently: a seed does not pair runs of different strategies, whose batches
differ) and one set of question weights shared by both strategies (questions *are* paired), then
recomputes each run's macro-averaged metric on that draw and averages over the drawn seeds. The 2.5%
and 97.5% percentiles of the difference give the 95% interval. With three seeds the seed level is
coarse (ten distinct draws), so the interval is a rough guide, not an exact coverage guarantee.

**Verdicts** (:func:`verdicts`) turn the strategies' intervals into one line per claim of the paper;
**findings** (:func:`findings`) read any other set's comparisons as rank distance and monolingual mAP
differences, with a one-line plain reading.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.metrics import metric_source

from .grids import RUNS

MARGIN = 0.01  # non-inferiority margin (mAP) for the paper's "as good as" claims


def metric_matrix(per_query: pd.DataFrame, metric: str, ids: pd.Index, unseen: frozenset = frozenset()
                  ) -> np.ndarray:
    """``(n_questions, n_cells)`` values of ``metric`` (a summary key, :func:`pipeline.metrics.metric_source`).

    A cell is (query language, pool language), as in :func:`pipeline.metrics.summarise`; a question
    is the ``id`` its translations share; NaN where a question lacks a cell.
    """
    setting, column, group = metric_source(metric)
    d = per_query[per_query["setting"] == setting]
    if group is not None:
        langs = d["query_lang"].where(d["setting"] == "multi", d["query_lang"] + "|" + d["pool_lang"])
        is_unseen = langs.str.split("|").apply(lambda ls: bool(set(ls) & set(unseen)))
        d = d[is_unseen if group == "unseen" else ~is_unseen]
    d = d.assign(id=d["qid"].str.split(":", n=1).str[1], cell=d["query_lang"] + ">" + d["pool_lang"])
    return d.pivot_table(index="id", columns="cell", values=column, aggfunc="first").reindex(ids).to_numpy()


def headline(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro average over cells of the question-weighted cell means; ``weights`` is ``(n_rep, n_questions)``."""
    mask = ~np.isnan(values)
    sums = weights @ np.where(mask, values, 0.0)
    counts = weights @ mask
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(sums / np.where(counts > 0, counts, np.nan), axis=1)


def question_ids(per_query: pd.DataFrame) -> pd.Index:
    return pd.Index(sorted(set(per_query["qid"].str.split(":", n=1).str[1])))


def seed_question_bootstrap(a: list[pd.DataFrame], b: list[pd.DataFrame], metrics, unseen=frozenset(),
                            n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Difference ``mean(b) - mean(a)`` over seeds per metric, with the two-level bootstrap interval.

    ``a`` and ``b`` are the per-query tables of one strategy's runs (one per seed). Returns one row
    per metric: ``a``, ``b`` (means over seeds), ``diff``, ``low``, ``high``, ``p_le_0`` (share of
    replicates with a difference <= 0), ``seeds_a``, ``seeds_b``.
    """
    ids = question_ids(a[0])
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=n_boot).astype(np.float64)
    pick_a = rng.integers(len(a), size=(n_boot, len(a)))
    pick_b = rng.integers(len(b), size=(n_boot, len(b)))
    ones = np.ones((1, len(ids)))
    rows = []
    for metric in metrics:
        va = [metric_matrix(t, metric, ids, unseen) for t in a]
        vb = [metric_matrix(t, metric, ids, unseen) for t in b]
        if any(v.shape != va[0].shape for v in va + vb):
            raise ValueError(f"{metric}: the runs do not cover the same cells")
        if va[0].size == 0 or np.isnan(va[0]).all():
            continue
        point_a = np.mean([headline(v, ones)[0] for v in va])
        point_b = np.mean([headline(v, ones)[0] for v in vb])
        ha = np.stack([headline(v, weights) for v in va])  # (seeds, n_boot)
        hb = np.stack([headline(v, weights) for v in vb])
        reps = np.arange(n_boot)[:, None]
        diffs = hb[pick_b, reps].mean(1) - ha[pick_a, reps].mean(1)
        lo, hi = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
        rows.append({"metric": metric, "a": point_a, "b": point_b, "diff": point_b - point_a, "low": lo, "high": hi,
                     "p_le_0": float((diffs <= 0).mean()), "seeds_a": len(a), "seeds_b": len(b)})
    return pd.DataFrame(rows)


def summary_table(runs: pd.DataFrame, metrics, order=RUNS) -> pd.DataFrame:
    """Mean and sample standard deviation over seeds per run (in the order ``order``, a run set's runs):
    ``<metric>_mean``, ``<metric>_sd``."""
    rows = []
    for run in [r for r in order if r in set(runs["run"])]:
        part = runs[runs["run"] == run]
        row = {"run": run, "seeds": int(len(part))}
        for m in metrics:
            if m in part:
                vals = part[m].astype(float)
                row[f"{m}_mean"] = float(vals.mean())
                row[f"{m}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _lookup(intervals: pd.DataFrame, a: str, b: str, metric: str) -> pd.Series | None:
    hit = intervals[(intervals["a_run"] == a) & (intervals["b_run"] == b) & (intervals["metric"] == metric)]
    return None if hit.empty else hit.iloc[0]


def _fmt(row: pd.Series, digits: int = 3) -> str:
    d = digits
    return f"{row['b_run']} - {row['a_run']} {row['diff']:+.{d}f} [{row['low']:+.{d}f}, {row['high']:+.{d}f}]"


def _better(rows: list[pd.Series]) -> str:
    """All differences reliably > 0: holds; any reliably < 0: fails; else not resolved."""
    if all(r["low"] > 0 for r in rows):
        return "holds"
    if any(r["high"] < 0 for r in rows):
        return "fails"
    return "not resolved"


def _not_worse(row: pd.Series, margin: float = MARGIN) -> str:
    """Non-inferiority: the interval's low end above -margin holds; its high end below -margin fails."""
    if row["low"] > -margin:
        return "holds"
    if row["high"] < -margin:
        return "fails"
    return "not resolved"


def verdicts(intervals: pd.DataFrame, has_unseen: bool) -> list[dict]:
    """One verdict per claim of the paper from the seed-aware intervals (``a_run``, ``b_run``, metric, ...).

    Claims: X-X best monolingual; X-Y best cross-lingual; hybrid >= X-Y multilingual and hybrid ~ X-X
    monolingual (non-inferiority with margin :data:`MARGIN`); hybrid less language bias than X-X;
    languages never trained on gain too (hybrid - untrained, multilingual mAP on unseen languages).
    """
    def get(a, b, m, sign=1):
        row = _lookup(intervals, a, b, m)
        if row is None:
            row = _lookup(intervals, b, a, m)
            if row is None:
                return None
            row = row.copy()
            row["a_run"], row["b_run"] = a, b
            row["diff"], row["low"], row["high"] = -row["diff"], -row["high"], -row["low"]
        return row

    out = []

    def claim(text, rows, rule):
        rows = [r for r in rows if r is not None]
        if not rows:
            return
        out.append({"claim": text, "verdict": rule(rows), "evidence": "; ".join(_fmt(r, 1 if "rank" in r["metric"]
                                                                                     else 3) for r in rows)})

    claim("X-X is best on monolingual mAP", [get("xy", "xx", "mono_map"), get("hybrid", "xx", "mono_map")], _better)
    claim("X-Y is best on cross-lingual mAP", [get("xx", "xy", "cross_map"), get("hybrid", "xy", "cross_map")],
          _better)
    claim(f"hybrid >= X-Y on multilingual mAP (margin {MARGIN})", [get("xy", "hybrid", "multi_map")],
          lambda rows: _not_worse(rows[0]))
    claim(f"hybrid ~ X-X on monolingual mAP (margin {MARGIN})", [get("xx", "hybrid", "mono_map")],
          lambda rows: _not_worse(rows[0]))
    bias = get("xx", "hybrid", "multi_rank_distance")
    claim("hybrid has less language bias than X-X (rank distance)", [bias],
          lambda rows: "holds" if rows[0]["high"] < 0 else ("fails" if rows[0]["low"] > 0 else "not resolved"))
    if has_unseen:
        claim("languages never trained on gain too (hybrid - untrained, multilingual mAP, unseen)",
              [get("untrained", "hybrid", "multi_map_unseen")], _better)
    return out


FINDING_METRICS = ("multi_rank_distance", "mono_map")


def _reading(rank: pd.Series, mono: pd.Series) -> str:
    """One line on ``b - a``: the rank distance change if its interval excludes 0, with the mono mAP change;
    "not resolved" (with both intervals) if the rank distance interval holds 0."""
    def iv(d, lo, hi, digits):  # + 0.0: no "-0.000" for a zero that was negated
        return f"{d + 0.0:.{digits}f} [{lo + 0.0:.{digits}f}, {hi + 0.0:.{digits}f}]"

    if mono["diff"] <= 0:
        cost = f"at a mono mAP cost of {iv(-mono['diff'], -mono['high'], -mono['low'], 3)}"
    else:
        cost = f"with a mono mAP gain of {iv(mono['diff'], mono['low'], mono['high'], 3)}"
    if mono["low"] <= 0 <= mono["high"]:
        cost += " (interval includes 0)"
    if rank["high"] < 0:
        return f"lowers rank distance by {iv(-rank['diff'], -rank['high'], -rank['low'], 1)} {cost}"
    if rank["low"] > 0:
        return f"raises rank distance by {iv(rank['diff'], rank['low'], rank['high'], 1)} {cost}"
    return (f"not resolved (rank distance {rank['diff']:+.1f} [{rank['low']:+.1f}, {rank['high']:+.1f}], "
            f"mono mAP {mono['diff']:+.3f} [{mono['low']:+.3f}, {mono['high']:+.3f}])")


def findings(intervals: pd.DataFrame) -> pd.DataFrame:
    """Per compared pair of ``intervals`` (``a_run``, ``b_run``, metric, ...), in their order: the multilingual
    rank distance and the monolingual mAP differences ``b - a`` with their 95% intervals, and a plain reading
    (:func:`_reading`). Pairs without both metrics are left out."""
    rows = []
    for (a, b), part in intervals.groupby(["a_run", "b_run"], sort=False):
        by = part.set_index("metric")
        if not set(FINDING_METRICS) <= set(by.index):
            continue
        rank, mono = by.loc["multi_rank_distance"], by.loc["mono_map"]
        row = {"a_run": a, "b_run": b}
        if "seeds_a" in by:
            row.update(seeds_a=int(rank["seeds_a"]), seeds_b=int(rank["seeds_b"]))
        for key, r in (("rank_distance", rank), ("mono_map", mono)):
            row.update({f"{key}_diff": r["diff"], f"{key}_low": r["low"], f"{key}_high": r["high"]})
        row["reading"] = _reading(rank, mono)
        rows.append(row)
    return pd.DataFrame(rows, columns=["a_run", "b_run", "seeds_a", "seeds_b", "rank_distance_diff",
                                       "rank_distance_low", "rank_distance_high", "mono_map_diff", "mono_map_low",
                                       "mono_map_high", "reading"])
