"""What a grid is: folds, scales and run sets of ``experiments/grids.yaml``, the ``-S`` overrides and params of
each experiment, experiment names, and where a grid's files go.

A grid is ``<fold>-<scale>``: one fold (which dataset trains, which one evaluates) at one scale (cpu, gpu, ...),
run for every run of a *run set* and seed as DVC experiments named ``<grid>-<run>-s<seed>``. A run set
(``run_sets``) names its runs (overrides applied after the fold and scale), the pairs it compares and the params
kept as ``runs.csv`` columns. The default set, ``strategies`` (:data:`RUNS`, :data:`COMPARISONS`), is the
paper's comparison: its files go to ``metrics/grids/<grid>/``; any other set's to
``metrics/grids/<grid>/<set>/`` (:func:`out_dir`).
"""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GRIDS = Path(__file__).resolve().with_name("grids.yaml")
OUT = ROOT / "metrics" / "grids"
DEFAULT_SET = "strategies"  # the paper's comparison: its files are metrics/grids/<grid>/*, with the verdicts
# the strategies run set (the default; grids.yaml run_sets.strategies holds the same)
RUNS = ("untrained", "xx", "xy", "hybrid")
COMPARISONS = (("xx", "hybrid"), ("xy", "hybrid"), ("xx", "xy"), ("untrained", "hybrid"))


def run_name(grid: str, run: str, seed: int) -> str:
    """The DVC experiment name of one run and seed of ``grid``, whatever its run set."""
    return f"{grid}-{run}-s{seed}"


def parse_run_name(name: str, grid: str, runs=RUNS) -> tuple[str, int] | None:
    """``(run, seed)`` of an experiment name of ``grid`` whose run is one of ``runs`` (a run set's), or None
    for other names. A run name may hold dashes (``hybrid-hn-query``): the seed follows the last ``-s``."""
    prefix = f"{grid}-"
    if not name.startswith(prefix) or "-s" not in name[len(prefix):]:
        return None
    run, _, seed = name[len(prefix):].rpartition("-s")
    return (run, int(seed)) if run in runs and seed.isdigit() else None


def run_set(name: str = DEFAULT_SET) -> dict:
    """Run set ``name`` of ``experiments/grids.yaml``: ``runs`` (run -> overrides, in order), ``comparisons``
    (``(a, b)`` pairs, difference ``b - a``) and ``record`` (params kept as runs.csv columns).

    Experiment names do not name the set, so a run name in two sets must have the same overrides there."""
    sets = yaml.safe_load(GRIDS.read_text())["run_sets"]
    if name not in sets:
        raise SystemExit(f"unknown run set {name!r}; run sets: {sorted(sets)}")
    runs = sets[name]["runs"]
    comparisons = [tuple(c) for c in sets[name].get("comparisons", [])]
    for c in comparisons:
        if len(c) != 2 or not set(c) <= set(runs):
            raise SystemExit(f"run set {name}: comparison {list(c)} is not two of its runs {list(runs)}")
    for other, spec in sets.items():
        for run in set(runs) & set(spec["runs"]):
            if spec["runs"][run] != runs[run]:
                raise SystemExit(f"run {run!r} has other overrides in run sets {name} and {other}: its experiments "
                                 f"<grid>-{run}-s<seed> would be two different things")
    return {"name": name, "runs": runs, "comparisons": comparisons, "record": list(sets[name].get("record", []))}


def grid_spec(grid: str, run_set_name: str = DEFAULT_SET) -> dict:
    """The fold, scale and overrides of ``grid`` (``<fold>-<scale>``) with the runs, comparisons and recorded
    params of run set ``run_set_name``."""
    spec = yaml.safe_load(GRIDS.read_text())
    fold, _, scale = grid.rpartition("-")
    if fold not in spec["folds"] or scale not in spec["scales"]:
        raise SystemExit(f"unknown grid {grid!r}; folds: {sorted(spec['folds'])}, scales: {sorted(spec['scales'])}")
    rs = run_set(run_set_name)
    return {"fold": fold, "scale": scale, "overrides": spec["folds"][fold] + spec["scales"][scale],
            "runs": rs["runs"], "comparisons": rs["comparisons"], "record": rs["record"], "run_set": rs["name"]}


def out_dir(grid: str, run_set_name: str = DEFAULT_SET) -> Path:
    """``metrics/grids/<grid>/`` for the default set, ``metrics/grids/<grid>/<set>/`` for any other."""
    return OUT / grid if run_set_name == DEFAULT_SET else OUT / grid / run_set_name


def overrides(grid: str, run: str, seed: int, run_set_name: str = DEFAULT_SET) -> list[str]:
    """The ``-S`` overrides of one experiment, applied in this order: fold, scale, run, seed."""
    spec = grid_spec(grid, run_set_name)
    if run not in spec["runs"]:
        raise SystemExit(f"run set {run_set_name} has no run {run!r}; its runs: {list(spec['runs'])}")
    return spec["overrides"] + spec["runs"][run] + [f"seed={seed}"]


def planned(grid: str, seeds: list[int], run_set_name: str = DEFAULT_SET, only=None) -> list[tuple[str, int]]:
    """``(run, seed)`` of every experiment to queue, run by run in the set's order (``only``: just these
    runs); the untrained run once, with the first seed."""
    runs = list(grid_spec(grid, run_set_name)["runs"])
    unknown = sorted(set(only or ()) - set(runs))
    if unknown:
        raise SystemExit(f"--only {' '.join(unknown)}: not in run set {run_set_name} ({' '.join(runs)})")
    return [(run, seed) for run in runs if only is None or run in only
            for seed in (seeds[:1] if run == "untrained" else seeds)]


def params_for(grid: str, run: str, seed: int, base: Path = ROOT / "params.yaml",
               run_set_name: str = DEFAULT_SET) -> dict:
    """The params DVC runs an experiment with: ``base`` with the overrides applied as ``dvc exp run -S`` does."""
    import shutil
    import tempfile

    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    from pipeline.params import parse_params

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        shutil.copy(base, path)
        try:
            apply_overrides(str(path), overrides(grid, run, seed, run_set_name))
        except InvalidArgumentError as e:  # a key params.yaml lacks: one line naming it, not DVC's traceback
            cause = str(e.__cause__ or e).splitlines()[0]
            raise SystemExit(f"{grid}/{run}/s{seed} (run set {run_set_name}): {cause} in {base}") from e
        data = yaml.safe_load(path.read_text())
    parse_params(data, f"{grid}/{run}/s{seed}")  # validated here, before anything is queued
    return data


def param_at(params: dict, key: str):
    """The value of the dotted ``key`` in ``params``, None where it is absent."""
    for part in key.split("."):
        if not isinstance(params, dict) or part not in params:
            return None
        params = params[part]
    return params


def dataset_of(grid: str) -> tuple[str, list[str]]:
    """The dataset ``grid`` evaluates on and the languages of its evaluation that training never saw."""
    p = params_for(grid, "hybrid", 0)
    unseen = set(p["score"]["unseen_languages"])
    for name in p["index"]["datasets"]:
        unseen |= set(p["datasets"][name]["languages"]) - set(p["languages"])
    return p["index"]["datasets"][0], sorted(unseen)


def headline_of(grid: str) -> tuple[str, ...]:
    """The grid's headline metric keys (its ``score.recall_at`` names the recall ones)."""
    from pipeline.metrics import headline_metrics

    return headline_metrics(params_for(grid, "hybrid", 0)["score"]["recall_at"])
