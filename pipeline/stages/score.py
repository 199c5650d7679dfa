"""DVC stage ``score``: LAReQA metrics from the embeddings written by ``index``.

Writes ``metrics/<dataset>.json`` (the declared DVC metrics: mono / cross / multi mAP, the R@k of
``score.recall_at``, rank distance, each also for seen and unseen languages), ``metrics/<dataset>-languages.csv``
(one row per query language, the DVC plots data) and ``data/scores/<dataset>/`` (``summary.json``, every
metric incl. mAP@k and every R@k of every setting; ``per_query.parquet``, the scores of every query in
every setting, for the intervals; ``cells.csv``, every query-language x pool-language cell; ``mteb.json``,
the results in MTEB's result layout).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..io import atomic_dir, write_csv, write_json
from ..metrics import check_summary, declared_metrics, score_embeddings, unseen_languages
from ..mteb_format import lareqa_mteb
from ..params import load_params
from .. import console


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="a key of params.datasets")
    ap.add_argument("--embeddings", help="default: data/embeddings/<dataset>")
    ap.add_argument("--scores", help="default: data/scores/<dataset>")
    ap.add_argument("--metrics", default="metrics")
    args = ap.parse_args(argv)
    params = load_params()
    p, name = params.score, args.dataset
    if name not in params.datasets:
        raise SystemExit(f"score: unknown dataset {name!r}; params.yaml datasets: {sorted(params.datasets)}")
    t0 = time.perf_counter()
    unseen = unseen_languages(params.datasets[name].languages, params.languages, p.unseen_languages)
    summary, languages, cells, per_query = score_embeddings(Path(args.embeddings or f"data/embeddings/{name}"),
                                                            p.map_cutoff, p.recall_at, unseen)
    check_summary(summary, name)  # a rate outside [0, 1] is a scoring bug: stop before anything is written
    with atomic_dir(Path(args.scores or f"data/scores/{name}")) as tmp:
        per_query.to_parquet(tmp / "per_query.parquet", index=False)
        cells.to_csv(tmp / "cells.csv", index=False, float_format="%.6f")
        write_json(tmp / "summary.json", summary)
        # the same results in MTEB's result layout (one entry per setting, mAP the main score)
        write_json(tmp / "mteb.json", lareqa_mteb(summary, name, list(params.datasets[name].languages)))
    languages["seen"] = ~languages["lang"].isin(unseen)
    write_csv(Path(args.metrics) / f"{name}-languages.csv", languages)
    write_json(Path(args.metrics) / f"{name}.json", declared_metrics(summary, p.recall_at))
    # the time is printed, not stored: metrics/*.json holds only numbers that the same inputs reproduce
    shown = ("mono_map", "cross_map", "multi_map", "multi_rank_distance")
    print(name, {k: v for k, v in summary.items() if k in shown},
          f"scored in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    console.run(main, "score")
