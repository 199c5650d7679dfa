"""The generated tables of README.md and docs/*.md, from the files under ``metrics/`` (never typed by hand).

    python -m scripts.readme_tables           # rewrite every generated block of README.md and docs/*.md
    python -m scripts.readme_tables --check   # exit 1 if a block of any of them differs from what the files give
    python -m scripts.readme_tables FILE ...  # just these files (with or without --check)

A generated block sits between ``<!-- table GRID KIND -->`` and ``<!-- /table -->``, in any of those files.
``KIND`` is ``runs`` (every experiment: seed, rule, kept step, headline metrics), ``summary`` (mean
+- sd over seeds), ``groups`` (seen and unseen languages), ``intervals`` (seed-and-question bootstrap
of the differences) or ``verdicts`` (one line per claim of the paper); a run set other than the strategies
is ``GRID/SET`` (``metrics/grids/<grid>/<set>/``), e.g. ``<!-- table mlqa2xquad-cpu/hardneg summary -->``,
and has ``findings`` (rank distance and mono mAP differences with their reading) where the strategies have
verdicts; ``target`` is any set's means over seeds against the offline model's target (:data:`TARGET`);
``<!-- table all overview -->`` puts every grid's
verdicts side by side; ``<!-- table xquad-r default -->`` is the default run (``metrics/xquad-r.json``,
``metrics/train.json``); ``<!-- table repro profile -->`` is the per-stage time and memory of a measured
``dvc repro`` (``metrics/repro-profile.json``, written by ``python -m scripts.profile_repro``);
``<!-- table training speed -->``, ``<!-- table encoding speed -->`` and ``<!-- table translation speed -->``
are the benchmarks' JSON files, ``<!-- table isa paths -->`` the kernel-path benchmark's
(``metrics/isa_paths.json``); ``<!-- table training data -->`` is the gathered and filtered pairs per
language (``metrics/gather.json``, ``metrics/data.json``).
tests/test_readme.py runs the check, so a number in the README or the docs that disagrees with its file
fails the tests.

The first ``runs``, ``summary`` or ``verdicts`` table of a grid in a file ends with the grid's code mark,
and the overview's column headings carry it: ``from today's code``, ``stale: train, score@xquad-r
changed`` (the stages whose .py dependencies or params in the workspace's dvc.lock differ from the grid's
``code.json``) or ``stale: ran before code identities were recorded`` (no ``code.json``); see
:mod:`experiments.staleness`. A code change that touches a stage therefore fails ``--check`` until the
tables are rendered again: the README says which tables are stale.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from experiments import staleness

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ROOT / "metrics" / "grids"
BLOCK = re.compile(r"(<!-- table (\S+) (\w+) -->\n)(.*?)(<!-- /table -->)", re.S)
NAMES = {"untrained": "untrained", "xx": "X-X", "xy": "X-Y", "hybrid": "hybrid (alpha 0.5)"}
GROUPS = [("mono_map", "mono"), ("cross_map", "cross"), ("multi_map", "multi"), ("multi_rank_distance", "rank dist.")]


def label(key: str) -> str:
    """Column heading of a metric key: ``mono_map`` -> ``mono mAP``, ``multi_r10`` -> ``multi R@10``."""
    from pipeline.metrics import metric_source

    setting, column, _ = metric_source(key)
    if column == "rank_distance":
        return "rank distance"
    return f"{setting} " + (column.replace("ap", "mAP") if column.startswith("ap") else column.replace("r@", "R@"))


def main_metrics(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """``(key, heading)`` of the headline metrics a grid's runs.csv holds (its recall cut-offs are the grid's)."""
    from pipeline.metrics import metric_source

    keys = []
    for c in runs.columns:
        try:
            if metric_source(c)[2] is None:
                keys.append(c)
        except ValueError:
            continue
    return [(k, label(k)) for k in keys]


def _num(v, metric: str) -> str:
    if v is None or pd.isna(v):
        return ""
    return f"{v:.1f}" if "rank" in metric else f"{v:.3f}"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(head: list[str], rows: list[list]) -> str:
    return "\n".join([_row(head), "|" + "---|" * len(head)] + [_row(r) for r in rows])


def name(run: str) -> str:
    """A run's name in the tables: the strategies' own (``X-X``), any other set's run as it is named."""
    return NAMES.get(run, run)


def runs_table(grid: Path) -> str:
    runs = pd.read_csv(grid / "runs.csv")
    main = main_metrics(runs)
    rows = []
    for _, r in runs.iterrows():
        kept = "-" if r["run"] == "untrained" else f"{int(r['best_step'])} of {int(r['steps_run'])}"
        rows.append([name(r["run"]), int(r["seed"]) if r["run"] != "untrained" else "-",
                     r["select_by"] if r["run"] != "untrained" else "-", kept, _num(r["dev_score"], "")]
                    + [_num(r[m], m) for m, _ in main])
    return _table(["run", "seed", "rule", "kept step", "dev score"] + [h for _, h in main], rows)


def summary_table(grid: Path) -> str:
    s = pd.read_csv(grid / "summary.csv")
    main = main_metrics(pd.read_csv(grid / "runs.csv"))
    rows = []
    for _, r in s.iterrows():
        cells = [name(r["run"]), int(r["seeds"])]
        for m, _ in main:
            mean, sd = r.get(f"{m}_mean"), r.get(f"{m}_sd")
            cells.append(_num(mean, m) + ("" if pd.isna(sd) else f" ± {_num(sd, m)}"))
        rows.append(cells)
    return _table(["run", "seeds"] + [h for _, h in main], rows)


#: the offline model's target on XQuAD-R, from the paper's hybrid (docs/findings.md): (summary column, label,
#: bound, whether the bound is a floor)
TARGET = (("multi_map", "multi mAP", 0.60, True), ("multi_rank_distance", "rank distance", 285.0, False),
          ("mono_map", "mono mAP", 0.800, True))


def target_table(grid: Path) -> str:
    """Each run's mean over seeds against the target: a cell ``0.5712 (no)`` is the mean and whether it reaches
    the bound in the head (multi mAP >= 0.60, rank distance <= 285, mono mAP >= 0.800); four decimals for
    mAP, so that a mean just under a bound never reads as the bound."""
    s = pd.read_csv(grid / "summary.csv")
    head = ["run", "seeds"] + [f"{label} ({'>=' if floor else '<='} {bound:g})" for _, label, bound, floor in TARGET]
    rows = []
    for _, r in s.iterrows():
        cells = [name(r["run"]), int(r["seeds"])]
        for metric, _, bound, floor in TARGET:
            mean = r[f"{metric}_mean"]
            reached = mean >= bound if floor else mean <= bound
            shown = f"{mean:.1f}" if "rank" in metric else f"{mean:.4f}"
            cells.append(f"{shown} ({'yes' if reached else 'no'})")
        rows.append(cells)
    return _table(head, rows)


def groups_table(grid: Path) -> str:
    s = pd.read_csv(grid / "summary.csv")
    if not any(c.endswith("_unseen_mean") for c in s.columns):
        return "(every evaluation language is a training language in this fold: no unseen group)"
    head = ["run"] + [f"{h} {g}" for _, h in GROUPS for g in ("seen", "unseen")]
    rows = [[name(r["run"])] + [_num(r.get(f"{m}_{g}_mean"), m) for m, _ in GROUPS for g in ("seen", "unseen")]
            for _, r in s.iterrows()]
    return _table(head, rows)


def intervals_table(grid: Path) -> str:
    iv = pd.read_csv(grid / "intervals.csv")
    shown = ["mono_map", "cross_map", "multi_map", "multi_rank_distance", "multi_map_unseen"]
    iv = iv[iv["metric"].isin(shown)]
    rows = []
    for (a, b), part in iv.groupby(["a_run", "b_run"], sort=False):
        cells = [f"{name(b)} - {name(a)}", f"{int(part['seeds_b'].iloc[0])} vs {int(part['seeds_a'].iloc[0])}"]
        for m in shown:
            hit = part[part["metric"] == m]
            if hit.empty:
                cells.append("")
                continue
            r = hit.iloc[0]
            d = 0 if "rank" in m else 3
            cells.append(f"{r['diff']:+.{d}f} [{r['low']:+.{d}f}, {r['high']:+.{d}f}]")
        rows.append(cells)
    head = ["difference", "seeds", "mono mAP", "cross mAP", "multi mAP", "rank distance", "multi mAP unseen"]
    if not iv["metric"].eq("multi_map_unseen").any():
        head, rows = head[:-1], [r[:-1] for r in rows]
    return _table(head, rows)


def verdicts_table(grid: Path) -> str:
    v = pd.read_csv(grid / "verdicts.csv")
    return _table(["claim (paper)", "verdict", "evidence: difference [95% interval]"],
                  [[r["claim"], f"**{r['verdict']}**", r["evidence"]] for _, r in v.iterrows()])


def findings_table(grid: Path) -> str:
    """A run set's findings (``findings.csv``): per compared pair the rank distance and mono mAP differences
    ``b - a`` with their 95% intervals, and the reading ``report`` wrote."""
    f = pd.read_csv(grid / "findings.csv")

    def iv(r, key, d):
        return f"{r[key + '_diff']:+.{d}f} [{r[key + '_low']:+.{d}f}, {r[key + '_high']:+.{d}f}]"

    rows = [[f"{name(r['b_run'])} - {name(r['a_run'])}", f"{int(r['seeds_b'])} vs {int(r['seeds_a'])}",
             iv(r, "rank_distance", 1), iv(r, "mono_map", 3), r["reading"]] for _, r in f.iterrows()]
    return _table(["difference", "seeds", "rank distance", "mono mAP", "reading"], rows)


def mining_table(grid: Path) -> str:
    """A hard-negative run set's mining (``mining.json``: the ``mine`` stage's statistics, identical in every
    run of the set, and the wall time it printed in each run)."""
    import json

    m = json.loads((grid / "mining.json").read_text())
    per_lang = ", ".join(f"{lang} {n:,}" for lang, n in m["negatives_per_language"].items())
    hist = ", ".join(f"{k}: {n:,}" for k, n in m["rank_histogram"].items())
    walls = m["wall_s"]
    rows = [["questions x distinct passages (all training languages)", f"{m['questions']:,} x {m['passages']:,}"],
            ["encoder, engine", f"{m['model']}, {m['engine']}"],
            ["rank range, margin, per (question, language)",
             f"{m['rank_range'][0]}-{m['rank_range'][1]}, {m['margin']}, {m['per_pair']}"],
            ["candidates mined", f"{m['negatives']:,} ({per_lang})"],
            ["questions without any candidate", f"{100 * m['questions_without_negative_share']:.2f}%"],
            ["(question, language) cells without a candidate", f"{100 * m['cells_without_negative_share']:.2f}%"],
            ["mean score gap to the positive", f"{m['mean_score_gap']:.3f}"],
            ["ranks of the candidates", hist],
            ["wall time of the stage", f"{min(walls):.0f}-{max(walls):.0f} s in {len(walls)} runs"]]
    return _table(["mining", "value"], rows)


def mix_table(grid: Path) -> str:
    """What each run trained on (``runs.csv``, :func:`experiments.collect.training_mix`): the machine-translated
    pairs the filter kept, the training pairs after the dev hold-out, the question ids the batches drew, and
    the language pair with the largest share of the cross-lingual rows."""
    runs = pd.read_csv(grid / "runs.csv")
    if "xy_top_pair" not in runs.columns:
        return "(collected without the batches' statistics)"
    rows = []
    for _, r in runs.iterrows():  # "-": a run without cross-lingual rows, or one collected without the statistics
        top = "-" if pd.isna(r["xy_top_pair"]) else f"{r['xy_top_pair']} ({r['xy_top_pair_share']:.3f})"
        rows.append([name(r["run"]), int(r["seed"])] + ["-" if pd.isna(r[c]) else f"{int(r[c]):,}" for c in
                                                         ("mt_kept", "train_pairs", "train_pair_ids", "xy_rows")]
                    + [top])
    return _table(["run", "seed", "MT pairs kept", "training pairs", "question ids in batches",
                   "cross-lingual rows", "largest cross-lingual pair (share of those rows)"], rows)


def code_mark(grids: Path, grid: str, lock: dict) -> str:
    """The line under a grid's table (``grid`` as the block names it, ``GRID`` or ``GRID/SET``): whether
    its runs ran today's code (:mod:`experiments.staleness`)."""
    return f"*Code of {grid}: {staleness.mark(staleness.grid_stale(grids / grid, lock))}.*"


def overview_table(grids: Path, lock: dict | None = None) -> str:
    """Every grid's verdict on every claim, side by side (block ``<!-- table all overview -->``), each
    grid's heading with its code mark."""
    found = sorted(p for p in grids.iterdir() if (p / "verdicts.csv").exists())
    claims: dict[str, dict[str, str]] = {}
    for g in found:
        for _, r in pd.read_csv(g / "verdicts.csv").iterrows():
            claims.setdefault(r["claim"], {})[g.name] = r["verdict"]
    rows = [[c] + [v.get(g.name, "n/a") for g in found] for c, v in claims.items()]
    lock = head_lock(grids) if lock is None else lock
    heads = [f"{g.name} ({staleness.mark(staleness.grid_stale(g, lock))})" for g in found]
    return _table(["claim (paper)"] + heads, rows)


def profile_table(path: Path) -> str:
    """Wall time and peak RSS per stage of a measured ``dvc repro`` (``scripts.profile_repro``)."""
    import json

    p = json.loads(path.read_text())
    rows = [[f"`{s['stage']}`", f"{s['wall_s']:.1f}", f"{s['peak_rss_mb']:,}"] for s in p["stages"]]
    rows.append([f"DVC itself (`{p['command']}`, {p['cpus']} cores)", f"{p['total_s']:.1f} in all",
                 f"{p['dvc_peak_rss_mb']:,}"])
    rows.append(["no-op `dvc repro` afterwards", f"{p['noop_repro_s']:.1f}", ""])
    return _table(["stage", "wall time (s)", "peak RSS (MB)"], rows)


def default_table(metrics: Path, dataset: str) -> str:
    """The offline default's own run: the kept step and the headline metrics of ``metrics/<dataset>.json``."""
    import json

    scores = json.loads((metrics / f"{dataset}.json").read_text())
    train = json.loads((metrics / "train.json").read_text())
    main = [(k, h) for k, h in main_metrics(pd.DataFrame(columns=list(scores)))]
    row = [f"{train['best_step']} of {train['steps_run']}", _num(train["dev_score"], "")]
    return _table(["kept step", "dev score"] + [h for _, h in main], [row + [_num(scores[k], k) for k, _ in main]])


def speed_table(path: Path) -> str:
    """A benchmark's configurations side by side: ``metrics/training_speed.json`` (s/step, pairs/s, peak
    RSS), ``metrics/encoding_speed.json`` (texts/s, agreement with torch fp32) or
    ``metrics/translation_speed.json`` (sentences/s, agreement with Hugging Face generate)."""
    import json

    b = json.loads(path.read_text())
    if "results" in b:  # translation: CTranslate2 against Hugging Face generate
        rows = [[f"`{r['engine']}`", r["decoding"], f"{r['sentences_per_s']:.1f}", f"{r['speedup_vs_hf']:.2f}x",
                 f"{100 * r['same_output_as_hf']:.1f}%"] for r in b["results"].values()]
        return _table(["engine", "decoding", "sentences/s", "vs HF generate", "same output as HF generate"], rows)
    if "configs" in b:  # training
        rows = [[f"`{name}`", ", ".join(f"{k} {v}" for k, v in c["settings"].items()), f"{c['s_per_step']:.2f}",
                 f"{c['pairs_per_s']:.1f}", f"{c['speedup_vs_baseline']:.2f}x", f"{c['peak_rss_gb']:.2f}"]
                for name, c in b["configs"].items()]
        return _table(["configuration", "settings", "s/step", "pairs/s", "vs baseline", "peak RSS (GB)"], rows)
    rows = [[f"`{name}`", ", ".join(f"{k} {v}" for k, v in e["settings"].items()), f"{e['texts_per_s']:.1f}",
             f"{e['speedup_vs_torch']:.2f}x", f"{e['min_cosine']:.4f}"] for name, e in b["engines"].items()]
    table = _table(["engine", "settings", "texts/s", "vs torch fp32", "min cosine to fp32"], rows)
    full = b.get("full_xquad_r_map")
    if full:
        names = [k for k in full if isinstance(full[k], dict) and "mono_map" in full[k]]
        table += "\n\n" + _table(["all of XQuAD-R, " + full["model"], "mono mAP", "cross mAP", "multi mAP"],
                                  [[f"`{n}`"] + [f"{full[n][m]:.4f}" for m in ("mono_map", "cross_map", "multi_map")]
                                   for n in names])
    cand = b.get("candidates")
    if cand:  # --candidates: engines that are not the pipeline's, in a run of their own
        table += "\n\n" + _table(["candidate engine (its own run)", "texts/s", "vs torch fp32 of that run",
                                    "min cosine to fp32"],
                                   [[f"`{n}`", f"{e['texts_per_s']:.1f}", f"{e['speedup_vs_torch']:.2f}x",
                                     f"{e['min_cosine']:.4f}"] for n, e in cand["engines"].items()])
    return table


def paths_table(path: Path) -> str:
    """``benchmarks/isa_paths.py``: the filter, encoding and training under each kernel path (bytes equal to
    the portable AVX2 path or not, the largest difference, time as a ratio to AVX2 in the same run), and
    the full train -> index -> score chain of ``metrics/isa_paths_chain.json`` where it exists."""
    import json

    b = json.loads(path.read_text())
    yes = {True: "yes", False: "no"}
    tables = [
        _table(["filter (CTranslate2 int8 round trip)", "time vs AVX2", "same bytes as AVX2", "pairs kept",
                "zh round-trip chrF"],
               [[f"`{f['path']}`", f"{f['time_vs_avx2']:.2f}x", yes[f["identical_to_avx2"]], f"{f['kept']:,}",
                 f"{f['zh_mean_roundtrip_chrf_question']:.3f}"] for f in b["filter"]]),
        _table([f"encoding ({b['texts']} passages, torch fp32)", "time vs AVX2", "same bytes as AVX2",
                "largest difference"],
               [[f"`{e['path']}`", f"{e['time_vs_avx2']:.2f}x", yes[e["identical_to_avx2"]],
                 f"{e['max_abs_diff_vs_avx2']:.1e}"] for e in b["encoding"]]),
        _table([f"training ({b['steps']} steps of the train stage)", "precision", "s/step vs AVX2 fp32",
                "same weights as AVX2", "largest weight difference", "final loss"],
               [[f"`{t['path']}`", t["precision"], f"{t['step_time_vs_avx2_fp32']:.2f}x",
                 yes[t["identical_to_avx2"]], f"{t['max_abs_weight_diff_vs_avx2']:.1e}",
                 f"{t['final_train_loss']:.6f}"] for t in b["training"]]),
    ]
    chain_file = path.parent / f"{path.stem}_chain.json"
    if chain_file.exists():
        chain = json.loads(chain_file.read_text())
        c = chain["chain"]
        profile = path.parent / "repro-profile.json"
        rows = []
        if "repro" in chain:  # the reference itself, as the chain file records it (the same machine)
            rows.append(["`make repro` (portable)", f"{chain['repro']['train_s']:.0f}",
                         f"{chain['repro']['index_s']:.0f}", "", "", "", "", ""])
        elif profile.exists():  # else make repro's own stage times (portable, the AVX2 path)
            wall = {st["stage"]: st["wall_s"] for st in json.loads(profile.read_text())["stages"]}
            rows.append(["`make repro` (portable; repro-profile.json)", f"{wall.get('train', 0):.0f}",
                         f"{wall.get('index@xquad-r', 0):.0f}", "", "", "", "", ""])
        tables.append(_table(["train -> index -> score (params.yaml), against make repro", "train s", "index s",
                              "same weights", "same kept step", "largest rate difference", "rank distance", "loss"],
                             rows + [[f"`{r['path']}`", f"{r['wall_s']['train']:.0f}", f"{r['wall_s']['index']:.0f}",
                               yes[r["identical_weights_to_repro"]],
                               yes[r["max_abs_difference_to_repro"].get("step", 0) == 0],
                               f"{r['max_abs_difference_to_repro'].get('rate', 0):.6f}",
                               f"{r['max_abs_difference_to_repro'].get('rank_distance', 0):.3f}",
                               f"{r['max_abs_difference_to_repro'].get('loss', 0):.6f}"] for r in c]))
    return "\n\n".join(tables)


READABLE = {"empty": "empty", "copy": "copy", "length_ratio": "length ratio", "langid": "language ID",
            "roundtrip": "round trip"}


def data_table(metrics: Path) -> str:
    """The training pairs per language (``metrics/gather.json``, ``metrics/data.json``): gathered, removed by
    the leakage guard, into the filter (the gathered ones plus a model's translations), kept by the filters,
    the rejections by reason (question and passage together, most first) and the mean round-trip chrF where
    the filter measured one."""
    import json

    gather, data = (json.loads((metrics / f).read_text()) for f in ("gather.json", "data.json"))
    removed: dict[str, int] = {}
    for source in gather.get("sources", {}).values():
        for lang, n in source.get("leakage_removed", {}).items():
            removed[lang] = removed.get(lang, 0) + n
    rows = []
    for lang, d in data["languages"].items():
        reasons: dict[str, int] = {}
        for key, n in d.get("rejected_by", {}).items():
            base = key.rsplit("_", 1)[0] if key.endswith(("_question", "_passage")) else key
            reasons[READABLE.get(base, base)] = reasons.get(READABLE.get(base, base), 0) + n
        why = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])) if n)
        chrf = ""
        if "mean_roundtrip_chrf_question" in d:
            chrf = f"{d['mean_roundtrip_chrf_question']:.1f} / {d['mean_roundtrip_chrf_passage']:.1f}"
        rows.append([lang, d["system"], f"{gather['languages'].get(lang, d['pairs_in']):,}",
                     f"{removed.get(lang, 0):,}", f"{d['pairs_in']:,}", f"{d['kept']:,}", why or "-", chrf])
    return _table(["lang", "pairs from", "gathered", "leakage removed", "into the filter (with translations)",
                   "kept after filters", "rejected (reasons)", "round-trip chrF (questions / passages)"], rows)


KINDS = {"runs": runs_table, "summary": summary_table, "groups": groups_table, "intervals": intervals_table,
         "verdicts": verdicts_table, "findings": findings_table, "mining": mining_table,
         "target": target_table, "mix": mix_table}


MARKED = ("runs", "summary", "verdicts")  # the first of these tables of a grid in a file ends with its code mark


def head_lock(grids: Path) -> dict:
    """The workspace's dvc.lock of a ``metrics/grids`` folder (``{}`` where there is none)."""
    path = grids.parent.parent / "dvc.lock"
    return staleness.read_lock(path) if path.exists() else {}


def render(text: str, grids: Path | None = None, lock: dict | None = None) -> str:
    """Every generated block of ``text`` from the files under ``grids`` (default :data:`GRIDS`); the code
    marks compare with ``lock`` (default: the dvc.lock beside ``metrics/``)."""
    grids = GRIDS if grids is None else grids
    cache: dict[str, dict] = {}
    marked: set[str] = set()

    def current() -> dict:
        if "lock" not in cache:
            cache["lock"] = head_lock(grids) if lock is None else lock
        return cache["lock"]

    def fill(m: re.Match) -> str:
        grid, kind = m.group(2), m.group(3)
        if kind == "overview":
            return m.group(1) + overview_table(grids, current()) + "\n" + m.group(5)
        if kind == "default":  # <!-- table xquad-r default -->: metrics/xquad-r.json + metrics/train.json
            return m.group(1) + default_table(grids.parent, grid) + "\n" + m.group(5)
        if kind == "speed":  # <!-- table training speed -->: metrics/training_speed.json
            return m.group(1) + speed_table(grids.parent / f"{grid}_speed.json") + "\n" + m.group(5)
        if kind == "paths":  # <!-- table isa paths -->: metrics/isa_paths.json (+ isa_paths_chain.json)
            return m.group(1) + paths_table(grids.parent / f"{grid}_paths.json") + "\n" + m.group(5)
        if kind == "data":  # <!-- table training data -->: metrics/gather.json + metrics/data.json
            return m.group(1) + data_table(grids.parent) + "\n" + m.group(5)
        if kind == "profile":  # <!-- table repro profile -->: metrics/repro-profile.json
            return m.group(1) + profile_table(grids.parent / f"{grid}-profile.json") + "\n" + m.group(5)
        if kind not in KINDS:
            raise SystemExit(f"generated block: unknown table kind {kind!r}; valid: {sorted(KINDS)}, overview, "
                             "default, speed, paths, data, profile")
        table = KINDS[kind](grids / grid)
        if kind in MARKED and grid not in marked:
            marked.add(grid)
            table += "\n\n" + code_mark(grids, grid, current())
        return m.group(1) + table + "\n" + m.group(5)

    return BLOCK.sub(fill, text)


def documents(root: Path = ROOT) -> list[Path]:
    """The files whose generated blocks are rendered and checked: README.md and every docs/*.md."""
    return [root / "README.md"] + sorted((root / "docs").glob("*.md"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="default: README.md and every docs/*.md")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--readme", type=Path, help="one file instead of README.md and docs/*.md (same as FILE)")
    args = ap.parse_args(argv)
    paths = args.files + ([args.readme] if args.readme else []) or documents()
    stale = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        new = render(text)
        if new == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.write_text(new, encoding="utf-8")
    for path in stale:
        print(f"{path}: generated tables or their code marks differ from metrics/ and dvc.lock "
              "(run python -m scripts.readme_tables)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
