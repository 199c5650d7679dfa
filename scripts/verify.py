"""Check what this machine regenerated against what is committed: ``make verify`` after ``make repro``.

    python -m scripts.verify                 # compare the working tree with HEAD
    python -m scripts.verify --against REV   # ... with another commit
    python -m scripts.verify --record        # write metrics/machine.json: this machine made the results

Data stages (models, gather, translate, filter, split, mine, assemble) must give the same bytes on any
x86-64 machine with AVX2 under ``reproducibility: portable``: their outputs' hashes in dvc.lock must be
equal. Training and evaluation (train, index, score) are compared by their metrics, each within the
tolerance of :data:`TOLERANCE` (measured by ``benchmarks/isa_paths.py``, stated in the README). One
table is printed (output, committed, regenerated, difference, verdict) with the machine that ran it, and
the exit status is 1 when a data output differs, a metric is out of tolerance or a stage has not run.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
MACHINE_FILE = "metrics/machine.json"

#: stages whose outputs must be byte-identical (by their dvc.lock hashes)
DATA_STAGES = ("models", "gather", "translate", "filter", "split", "mine", "assemble")
#: stages compared through their metrics files
MODEL_STAGES = ("train", "index", "score")

#: largest absolute difference accepted between machines, per kind of metric (see benchmarks/isa_paths.py)
TOLERANCE = {
    "rate": 0.002,          # mAP, recall, dev scores: a fraction of queries
    "rank_distance": 2.0,   # mean rank distance over a pool of ~13k passages
    "loss": 0.01,           # training loss
    "step": 0,              # which step was kept: the same, or the model is another one
    "count": 0,             # queries, pool, languages, parameters: exact
}


def metric_kind(key: str) -> str | None:
    """The tolerance class of a metric key, or None for keys that are not compared (timings, labels)."""
    if "rank_distance" in key:
        return "rank_distance"
    if "loss" in key:
        return "loss"
    if key in ("best_step", "steps_run", "stopped_early"):
        return "step"
    if key in ("queries", "pool", "languages") or key.endswith("_params"):
        return "count"
    if "map" in key or "_r" in key or key.endswith("score"):
        return "rate"
    return None


def lock_outs(lock: dict) -> dict[str, dict[str, str]]:
    """``{stage: {out path: hash}}`` of a parsed dvc.lock."""
    out = {}
    for stage, entry in (lock or {}).get("stages", {}).items():
        out[stage] = {o["path"]: o.get("md5") or o.get("hash", "") for o in entry.get("outs", [])}
    return out


def pipeline_stages(dvc_yaml: dict) -> set[str]:
    """The stage names dvc.yaml has now; a foreach stage by its ``name@`` prefix (its items come from params)."""
    return {f"{name}@" if "foreach" in stage else name for name, stage in dvc_yaml.get("stages", {}).items()}


def git_show(rev: str, path: str) -> str | None:
    try:
        return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    except subprocess.CalledProcessError:
        return None


def compare_outputs(committed: dict, regenerated: dict, current: set[str]) -> list[dict]:
    """One row per data-stage output: its hash committed and regenerated; a model-stage output that
    differs is reported and left to the metrics rows."""
    rows = []
    for stage in sorted(committed):
        base = stage.split("@", 1)[0]
        if (f"{base}@" if "@" in stage else base) not in current:  # an entry of a stage dvc.yaml no longer has
            continue
        data = base in DATA_STAGES
        for path, want in sorted(committed[stage].items()):
            got = regenerated.get(stage, {}).get(path)
            if got is None:
                rows.append(row(path, want, "-", "-", "NOT RUN"))
            elif got == want:
                rows.append(row(path, want, got, "-", "identical"))
            else:
                rows.append(row(path, want, got, "bytes", "DIFFERENT" if data else "differs (see metrics)"))
    return rows


def compare_metrics(name: str, committed: dict, regenerated: dict) -> list[dict]:
    rows = []
    for key, want in committed.items():
        kind = metric_kind(key)
        if kind is None or not isinstance(want, (int, float)):
            continue
        got = regenerated.get(key)
        if not isinstance(got, (int, float)):
            rows.append(row(f"{name}: {key}", want, "-", "-", "MISSING"))
            continue
        diff = abs(float(got) - float(want))
        ok = diff <= TOLERANCE[kind] or (math.isnan(want) and math.isnan(got))
        verdict = "identical" if diff == 0 else (f"within {TOLERANCE[kind]:g}" if ok else
                                                 f"OUT OF TOLERANCE ({TOLERANCE[kind]:g})")
        rows.append(row(f"{name}: {key}", want, got, f"{float(got) - float(want):+.6g}", verdict))
    return rows


def compare_table(name: str, committed: pd.DataFrame, regenerated: pd.DataFrame, key: str = "lang") -> list[dict]:
    """Per column of a per-language table: the largest difference over its rows."""
    rows = []
    merged = committed.merge(regenerated, on=key, how="outer", suffixes=("_c", "_r"), indicator=True)
    if (merged["_merge"] != "both").any():
        return [row(name, len(committed), len(regenerated), "rows", "MISSING ROWS")]
    for col in committed.columns:
        kind = metric_kind(col)
        if col == key or kind is None or not pd.api.types.is_numeric_dtype(committed[col]):
            continue
        d = (merged[f"{col}_r"] - merged[f"{col}_c"]).abs()
        worst = int(d.values.argmax())
        diff = float(d.iloc[worst])
        ok = diff <= TOLERANCE[kind]
        verdict = "identical" if diff == 0 else (f"within {TOLERANCE[kind]:g}" if ok else
                                                 f"OUT OF TOLERANCE ({TOLERANCE[kind]:g})")
        lang = merged[key].iloc[worst]
        rows.append(row(f"{name}: {col} (worst: {lang})", float(merged[f"{col}_c"].iloc[worst]),
                        float(merged[f"{col}_r"].iloc[worst]), f"{diff:.6g}", verdict))
    return rows


def row(output, committed, regenerated, difference, verdict) -> dict:
    return {"output": output, "committed": short(committed), "regenerated": short(regenerated),
            "difference": difference, "verdict": verdict}


def short(v) -> str:
    if isinstance(v, str):
        return v[:12]
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def failed(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["verdict"].isupper() or r["verdict"].startswith("OUT OF")]


def metrics_files() -> list[str]:
    """The metrics and per-language tables that train and score write (one set per index.datasets entry)."""
    from pipeline.params import load_params

    files = ["metrics/train.json"]
    for name in load_params(ROOT / "params.yaml").index.datasets:
        files += [f"metrics/{name}.json", f"metrics/{name}-languages.csv"]
    return files


def this_machine() -> dict:
    from pipeline.reproducibility import PORTABLE_ENV, machine, mode_from_params

    m = machine()
    mode = mode_from_params(ROOT / "params.yaml")  # what the stages ran with (this process is not a stage)
    return {**m, "reproducibility": mode, "pins": dict(PORTABLE_ENV) if mode == "portable" else {}}


def describe(m: dict) -> str:
    libs = ", ".join(f"{k} {v}" for k, v in m.get("libraries", {}).items())
    return (f"{m.get('cpu')} ({m.get('arch')}, {m.get('cores')} cores; {' '.join(m.get('isa_flags', []))}); "
            f"reproducibility: {m.get('reproducibility')}; {libs}")


def verify(against: str = "HEAD") -> tuple[list[dict], dict]:
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    committed_lock = git_show(against, "dvc.lock")
    if committed_lock is None:
        raise SystemExit(f"verify: {against}:dvc.lock not found (nothing committed to compare with)")
    lock_path = ROOT / "dvc.lock"
    if not lock_path.exists():
        raise SystemExit("verify: dvc.lock not found: run `make repro` first")
    rows = compare_outputs(lock_outs(yaml.safe_load(committed_lock)), lock_outs(yaml.safe_load(lock_path.read_text())),
                           pipeline_stages(dvc_yaml))
    for path in metrics_files():
        old, new = git_show(against, path), ROOT / path
        if old is None:
            continue
        if not new.exists():
            rows.append(row(path, "committed", "-", "-", "MISSING"))
        elif path.endswith(".csv"):
            rows += compare_table(path, pd.read_csv(io.StringIO(old)), pd.read_csv(new))
        else:
            rows += compare_metrics(path, json.loads(old), json.loads(new.read_text()))
    committed_machine = git_show(against, MACHINE_FILE)
    return rows, (json.loads(committed_machine) if committed_machine else {})


def render(rows: list[dict]) -> str:
    cols = ["output", "committed", "regenerated", "difference", "verdict"]
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols), "  ".join("-" * width[c] for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="HEAD", help="the commit whose results are compared (default HEAD)")
    ap.add_argument("--record", action="store_true",
                    help=f"write {MACHINE_FILE}: this machine produced the results about to be committed")
    args = ap.parse_args(argv)
    here = this_machine()
    if args.record:
        from pipeline.io import write_json

        write_json(ROOT / MACHINE_FILE, here)
        print(f"wrote {MACHINE_FILE}: {describe(here)}")
        return 0
    rows, there = verify(args.against)
    print(render(rows))
    print(f"\nthis machine:      {describe(here)}")
    print(f"committed results: {describe(there) if there else f'no {MACHINE_FILE} at {args.against}'}")
    bad = failed(rows)
    if here["reproducibility"] != "portable":
        print("reproducibility: fast: every library chose this machine's kernels, so differences are expected")
    print(f"\n{len(rows) - len(bad)} of {len(rows)} checks passed" +
          (f"; {len(bad)} failed: " + ", ".join(r['output'] for r in bad) if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
