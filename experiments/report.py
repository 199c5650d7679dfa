"""The files a grid's report writes beside its collected runs: ``summary.csv`` (mean and sd over seeds),
``intervals.csv`` (seed-and-question bootstrap, :mod:`experiments.stats`) and ``verdicts.csv`` (one line per
claim of the paper, default run set) or ``findings.csv`` (any other run set)."""
from __future__ import annotations

import pandas as pd

from pipeline.io import write_csv

from . import grids
from .grids import DEFAULT_SET
from .stats import findings, seed_question_bootstrap, summary_table, verdicts

GROUP_METRICS = ("mono_map", "cross_map", "multi_map", "multi_rank_distance")  # each _seen and _unseen


def report(grid: str, run_set_name: str = DEFAULT_SET) -> None:
    """summary.csv, intervals.csv and, for the default set, verdicts.csv (the paper's claims), for any other
    findings.csv, from the runs.csv and per-query.parquet of :func:`experiments.grids.out_dir`."""
    out = grids.out_dir(grid, run_set_name)
    spec = grids.run_set(run_set_name)
    runs = pd.read_csv(out / "runs.csv")
    pq = pd.read_parquet(out / "per-query.parquet")
    for c in pq.columns:
        if isinstance(pq[c].dtype, pd.CategoricalDtype):
            pq[c] = pq[c].astype(str)
    _, unseen = grids.dataset_of(grid)
    headline = grids.headline_of(grid)
    metrics = list(headline) + [f"{m}_{g}" for g in ("seen", "unseen") for m in GROUP_METRICS]
    write_csv(out / "summary.csv", summary_table(runs, [m for m in metrics if m in runs and runs[m].notna().any()],
                                                 order=list(spec["runs"])))
    tables = {run: [g.drop(columns=["run", "seed"]) for _, g in pq[pq["run"] == run].groupby("seed", sort=True)]
              for run in spec["runs"] if run in set(pq["run"])}
    boot_metrics = list(headline)
    if unseen:
        boot_metrics += ["multi_map_unseen", "multi_map_seen"]
    parts = []
    for a, b in spec["comparisons"]:
        if a in tables and b in tables:
            res = seed_question_bootstrap(tables[a], tables[b], boot_metrics, frozenset(unseen))
            parts.append(res.assign(a_run=a, b_run=b))
    if not parts:
        raise SystemExit(f"{out}: no pair of run set {run_set_name} has both runs collected")
    intervals = pd.concat(parts, ignore_index=True)[["a_run", "b_run", "metric", "seeds_a", "seeds_b", "a", "b",
                                                     "diff", "low", "high", "p_le_0"]]
    write_csv(out / "intervals.csv", intervals)
    if run_set_name == DEFAULT_SET:
        v = pd.DataFrame(verdicts(intervals, bool(unseen)))
        write_csv(out / "verdicts.csv", v)
    else:
        v = findings(intervals)
        write_csv(out / "findings.csv", v)
    print(v.to_string(index=False))
