"""Run the strategy comparison as a researcher would, and tabulate it with bootstrap intervals.

    python scripts/compare_strategies.py            # dvc exp run for each run below, then report
    python scripts/compare_strategies.py --report   # only rebuild the tables from saved runs

Runs: ``baseline`` (train.steps=0: the untrained encoder), ``xx``, ``xy``, ``hybrid``
(``-S sampling.mode=...``). Each is a DVC experiment (``dvc exp show`` lists them); after each, its
headline metrics and per-query scores are copied to ``metrics/strategies/<run>.json`` and
``<run>-per-query.parquet``. The report writes ``metrics/strategies.csv`` (one row per run),
``metrics/strategies-bootstrap.csv`` (paired bootstrap 95% intervals of the differences) and prints
both as Markdown for the README. Extra ``-S`` overrides apply to every run (e.g. ``-S train.steps=400``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.io import write_csv  # noqa: E402
from pipeline.significance import paired_bootstrap  # noqa: E402

RUNS = {"baseline": ["train.steps=0"], "xx": ["sampling.mode=xx"], "xy": ["sampling.mode=xy"],
        "hybrid": ["sampling.mode=hybrid"]}
COMPARISONS = [("xx", "hybrid"), ("xy", "hybrid"), ("xx", "xy"), ("baseline", "hybrid")]
COLUMNS = ["mono_map", "cross_map", "multi_map", "mono_map20", "cross_map20", "multi_map20", "mono_r1",
           "cross_r1", "multi_r10", "multi_rank_distance"]


def committed_steps() -> int:
    """train.steps of the committed params.yaml: a trained run must set it, since ``dvc exp run`` leaves
    the previous run's params (e.g. the baseline's ``train.steps=0``) in the workspace."""
    import yaml

    text = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, check=True, capture_output=True, text=True)
    return int(yaml.safe_load(text.stdout)["train"]["steps"])


def run_experiments(names, overrides, dataset, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = committed_steps()
    for name in names:
        run_sets = RUNS[name] if name == "baseline" else [f"train.steps={steps}"] + RUNS[name]
        sets = [a for s in run_sets + overrides for a in ("-S", s)]
        exp = f"{name}-{dataset}"
        subprocess.run(["dvc", "exp", "remove", exp], cwd=ROOT, capture_output=True)  # rerun replaces it
        # no --force: DVC reruns only what the overrides touch (assemble, train, index, score)
        subprocess.run(["dvc", "exp", "run", "-n", exp, *sets], cwd=ROOT, check=True)
        shutil.copy(ROOT / "metrics" / f"{dataset}.json", out_dir / f"{name}.json")
        shutil.copy(ROOT / "data" / "scores" / dataset / "per_query.parquet", out_dir / f"{name}-per-query.parquet")
        shutil.copy(ROOT / "metrics" / "train.json", out_dir / f"{name}-train.json")


def report(out_dir: Path, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = pd.DataFrame([table_row(name, json.loads((out_dir / f"{name}.json").read_text()))
                          for name in RUNS if (out_dir / f"{name}.json").exists()])
    boots = []
    for a, b in COMPARISONS:
        pa, pb = out_dir / f"{a}-per-query.parquet", out_dir / f"{b}-per-query.parquet"
        if pa.exists() and pb.exists():
            res = paired_bootstrap(pd.read_parquet(pa), pd.read_parquet(pb))
            boots.append(res.assign(a_run=a, b_run=b))
    boot = pd.concat(boots, ignore_index=True) if boots else pd.DataFrame()
    write_csv(ROOT / "metrics" / "strategies.csv", table)
    if not boot.empty:
        write_csv(ROOT / "metrics" / "strategies-bootstrap.csv", boot[["a_run", "b_run", "metric", "a", "b", "diff",
                                                                       "low", "high", "p_le_0"]])
    return table, boot


def table_row(name: str, m: dict) -> dict:
    row = {"run": name, **{c: m.get(c) for c in COLUMNS}}
    for group in ("seen", "unseen"):
        for c in ("mono_map", "cross_map", "multi_map", "multi_rank_distance"):
            row[f"{c}_{group}"] = m.get(f"{c}_{group}")
    return row


def gpu_report(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same tables for a folder written by scripts/gpu_strategies.py (summary.json + per-query.parquet)."""
    summary = json.loads((folder / "summary.json").read_text())
    table = pd.DataFrame([table_row(name, r["metrics"]) for name, r in summary["runs"].items()])
    per_query = pd.read_parquet(folder / "per-query.parquet")
    runs = set(per_query["run"])
    boots = [paired_bootstrap(per_query[per_query.run == a], per_query[per_query.run == b]).assign(a_run=a, b_run=b)
             for a, b in COMPARISONS if a in runs and b in runs]
    boot = pd.concat(boots, ignore_index=True) if boots else pd.DataFrame()
    write_csv(folder / "table.csv", table)
    if not boot.empty:
        write_csv(folder / "bootstrap.csv", boot[["a_run", "b_run", "metric", "a", "b", "diff", "low", "high", "p_le_0"]])
    return table, boot


def markdown(table: pd.DataFrame, boot: pd.DataFrame) -> str:
    fmt = lambda v: "" if v is None or pd.isna(v) else (f"{v:.1f}" if abs(v) > 2 else f"{v:.3f}")  # noqa: E731
    head = ["run", "mono mAP", "cross mAP", "multi mAP", "mono mAP@20", "cross mAP@20", "multi mAP@20", "mono R@1",
            "cross R@1", "multi R@10", "rank dist."]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        out.append("| " + " | ".join([r["run"]] + [fmt(r[c]) for c in COLUMNS]) + " |")
    out += ["", "| run | mono seen | mono unseen | cross seen | cross unseen | multi seen | multi unseen | rank dist. seen | rank dist. unseen |",
            "|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        cells = [r[f"{c}_{g}"] for c in ("mono_map", "cross_map", "multi_map", "multi_rank_distance") for g in ("seen", "unseen")]
        out.append("| " + " | ".join([r["run"]] + [fmt(v) for v in cells]) + " |")
    if not boot.empty:
        out += ["", "| b - a | metric | diff | 95% interval |", "|---|---|---|---|"]
        for _, r in boot[boot.metric.isin(["mono_map", "cross_map", "multi_map", "multi_rank_distance"])].iterrows():
            out.append(f"| {r.b_run} - {r.a_run} | {r.metric} | {r['diff']:+.4f} | [{r.low:+.4f}, {r.high:+.4f}] |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="only rebuild the tables from saved runs")
    ap.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("-S", dest="overrides", action="append", default=[], help="extra param override for every run")
    ap.add_argument("--dataset", default="xquad-r")
    ap.add_argument("--out", default=str(ROOT / "metrics" / "strategies"))
    ap.add_argument("--gpu", help="only report a folder written by scripts/gpu_strategies.py")
    args = ap.parse_args()
    if args.gpu:
        print(markdown(*gpu_report(Path(args.gpu))))
        return
    out_dir = Path(args.out)
    if not args.report:
        run_experiments(args.runs, args.overrides, args.dataset, out_dir)
    table, boot = report(out_dir, args.dataset)
    print(markdown(table, boot))


if __name__ == "__main__":
    main()
