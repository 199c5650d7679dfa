"""The strategy comparison as DVC experiments: the runs of a run set x seeds, for one fold at one scale.

    python -m experiments run --grid mlqa2xquad-cpu --seeds 13 14 15   # queue, run, collect, report
    python -m experiments collect --grid mlqa2xquad-cpu                # experiments -> metrics/grids/
    python -m experiments report --grid mlqa2xquad-cpu                 # summary, intervals, verdicts
    python -m experiments run --grid mlqa2xquad-cpu --runs hardneg     # another run set
    python -m experiments queue --grid mlqa2xquad-cpu --runs hardneg --only hybrid-hn-query
    python -m experiments collect --grid mlqa2xquad-cpu --runs mtdata --add   # beside the runs collected before
    python -m experiments collect --grid mlqa2xquad-cpu --runs mtdata --seeds 13   # a finished seed alone

(``python -m scripts.compare_strategies`` and ``hybrid-batch-compare`` are the same command.)

A grid is ``<fold>-<scale>`` from ``experiments/grids.yaml``; a run set (``--runs``, its ``run_sets``) names
the runs (overrides after the fold and scale) and the compared pairs (:mod:`experiments.grids`). The default
set, ``strategies``, is the paper's comparison: its files go to ``metrics/grids/<grid>/`` with
``verdicts.csv``; any other set's go to ``metrics/grids/<grid>/<set>/`` with ``findings.csv`` instead
(:func:`experiments.stats.findings`). Experiment names are ``<grid>-<run>-s<seed>`` in every set. ``run``
queues one experiment per run (``--only``: some of them) and seed (``dvc exp run --queue -n
<grid>-<run>-s<seed> -S ...``; the untrained baseline once), starts DVC's queue (``dvc queue start -j JOBS``)
and waits for it (:mod:`experiments.queue`). Each experiment runs the same ``dvc.yaml`` with validated params
in DVC's temporary copy of the workspace. ``collect`` reads every experiment of the grid and run set back from
DVC into ``runs.csv`` and ``per-query.parquet`` (:mod:`experiments.collect`); with ``--add`` beside the runs
collected there before, so a grid that outlasts the machine it started on is run in parts on several. ``report`` writes
``summary.csv``, ``intervals.csv`` and ``verdicts.csv`` or ``findings.csv`` (:mod:`experiments.report`).

GPU grids (``*-gpu``) run on a lent GPU machine, where there is no DVC: ``python -m experiments.gpu``
carries the same stage modules with the params files DVC would have made; its results are read by
``collect --from DIR``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import collect, grids, queue
from .grids import DEFAULT_SET
from .report import report


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["run", "queue", "collect", "report"])
    ap.add_argument("--grid", required=True, help="<fold>-<scale> of experiments/grids.yaml, e.g. mlqa2xquad-cpu")
    ap.add_argument("--runs", dest="run_set", default=DEFAULT_SET,
                    help="run set of experiments/grids.yaml (run_sets), e.g. hardneg; default: %(default)s")
    ap.add_argument("--only", nargs="+", metavar="RUN", help="run/queue: just these runs of the set")
    ap.add_argument("--seeds", type=int, nargs="+",
                    help="run/queue: the seeds to run (default: 13 14 15); collect: only these seeds' experiments "
                         "(default: every seed there is)")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="dvc queue start -j (parallel experiments)")
    ap.add_argument("--from", dest="folder", help="collect: a results folder of experiments.gpu instead of DVC")
    ap.add_argument("--device", default="", help="collect --from: the device the results came from")
    ap.add_argument("--add", action="store_true",
                    help="collect: keep the runs collected before (another machine's or an earlier clone's; DVC "
                         "keeps experiments in one repository), replacing those collected again")
    args = ap.parse_args(argv)
    if args.only and args.action not in ("run", "queue"):
        ap.error("--only chooses runs to queue: use it with run or queue")
    if args.add and args.action not in ("run", "collect"):
        ap.error("--add keeps collected runs: use it with run or collect")
    if args.seeds and args.action == "report":
        ap.error("--seeds chooses experiments to run or collect: report reads what collect kept")
    grids.grid_spec(args.grid, args.run_set)
    if args.action in ("run", "queue"):
        names = queue.queue(args.grid, args.seeds or [13, 14, 15], args.run_set, args.only)
        print(f"queued {len(names)}: {' '.join(names)}")
        if args.action == "queue":
            return
        queue.run_queued(args.grid, names, args.jobs, args.run_set)
    if args.action in ("run", "collect"):
        seeds = args.seeds if args.action == "collect" else None  # run collects every seed there is
        if args.folder:
            collect.collect_folder(args.grid, Path(args.folder), args.device, args.run_set, args.add, seeds)
        else:
            collect.collect(args.grid, args.run_set, args.add, seeds)
    report(args.grid, args.run_set)


if __name__ == "__main__":
    main()
