"""The experiment harness: grids of runs x seeds over the DVC pipeline, and what is made of their results.

* :mod:`experiments.grids`: what a grid is (``grids.yaml``: folds, scales, run sets), its overrides, params,
  experiment names and output folder;
* :mod:`experiments.queue`: queueing a grid's runs with ``dvc exp run --queue``, starting and waiting;
* :mod:`experiments.collect`: finished experiments -> ``metrics/grids/<grid>/`` (runs.csv, per-query.parquet,
  code.json);
* :mod:`experiments.staleness`: the code identity of a grid's runs and the stages changed since;
* :mod:`experiments.stats`: summaries, seed-and-question bootstrap intervals, verdicts, findings;
* :mod:`experiments.report`: the tables a grid's report writes (summary, intervals, verdicts or findings);
* :mod:`experiments.gpu`: a GPU grid carried to a lent GPU machine, run there by the stage modules;
* :mod:`experiments.plots`: PNG plots of the workspace or of experiments, offline;
* :mod:`experiments.cli`: ``python -m experiments run|queue|collect|report``.
"""
