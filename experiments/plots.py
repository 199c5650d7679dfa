"""Plots of the workspace or of any set of DVC experiments, as PNG files, offline (matplotlib).

    python -m experiments.plots --out tmp/plots                                 # the workspace
    python -m experiments.plots --exp mlqa2xquad-cpu-xx-s13 mlqa2xquad-cpu-xy-s13 mlqa2xquad-cpu-hybrid-s13 \\
        --out tmp/compare                                                       # experiments side by side
    python -m experiments.plots --exp workspace HEAD my-exp --out tmp/compare  # names, git revisions, the workspace

DVC's own HTML plots load their scripts from a CDN; these need nothing online. Each source is an
experiment name (``dvc exp show``), a git revision, or ``workspace``; its files are read with
``git show <rev>:<path>`` (the plots data is small and kept in git: ``cache: false``). Writes into ``--out``:

* ``<dataset>-languages.png``: mono / cross / multi mAP per query language, one bar per source, each
  labelled with its value, the unseen languages marked; each panel's y axis spans its values (its label
  says where it starts), so differences of 0.01 between strategies show;
* ``training.png``: training loss per step (faint) and its exponential moving average, and the dev-set
  score per step, one colour per source; a dashed line marks the step each source kept (``best_step`` of
  ``metrics/train.json``).

Titles and legends carry the source names. The committed PNGs under ``plots/`` are the workspace of
the offline default (``python -m experiments.plots --out plots``; ``python -m scripts.plots`` is the same
command).
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIVE = "dvclive/train/plots/metrics"
SETTINGS = ("mono_map", "cross_map", "multi_map")


def resolve(source: str, repo: Path = ROOT) -> str | None:
    """The git revision of ``source``: None for ``workspace``, an experiment's commit for its name, else
    ``source`` itself when git knows it as a revision."""
    if source == "workspace":
        return None
    refs = subprocess.run(["git", "for-each-ref", "refs/exps", "--format=%(refname) %(objectname)"], cwd=repo,
                          capture_output=True, text=True, check=True).stdout.split("\n")
    hits = [line.split()[1] for line in refs if line and line.split()[0].rsplit("/", 1)[-1] == source]
    if len(hits) > 1:
        raise SystemExit(f"{source!r} names {len(hits)} experiments; pass a commit instead")
    if hits:
        return hits[0]
    rev = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{source}^{{commit}}"], cwd=repo,
                         capture_output=True, text=True)
    if rev.returncode:
        raise SystemExit(f"{source!r} is neither an experiment (dvc exp list --all-commits), a git revision, "
                         "nor 'workspace'")
    return rev.stdout.strip()


def read(rev: str | None, path: str, repo: Path = ROOT, sep: str = ",") -> pd.DataFrame | None:
    """A CSV/TSV file of the workspace (``rev`` None) or of a git revision; None when it has none."""
    if rev is None:
        return pd.read_csv(repo / path, sep=sep) if (repo / path).exists() else None
    out = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True)
    return pd.read_csv(io.BytesIO(out.stdout), sep=sep) if out.returncode == 0 else None


def kept_step(rev: str | None, repo: Path = ROOT) -> int | None:
    """The training step whose weights the train stage kept (``best_step`` of ``metrics/train.json``) in the
    workspace (``rev`` None) or at a git revision; None where the file or the key is absent."""
    if rev is None:
        path = repo / "metrics" / "train.json"
        text = path.read_text(encoding="utf-8") if path.exists() else None
    else:
        out = subprocess.run(["git", "show", f"{rev}:metrics/train.json"], cwd=repo, capture_output=True, text=True)
        text = out.stdout if out.returncode == 0 else None
    try:
        step = json.loads(text).get("best_step") if text else None
    except (ValueError, AttributeError):
        return None
    return int(step) if isinstance(step, int | float) else None


def ema(values: pd.Series, span: float) -> pd.Series:
    """Exponential moving average over ``span`` steps, debiased (the first values are not pulled towards 0)."""
    return pd.Series(values, dtype=float).reset_index(drop=True).ewm(span=span, adjust=True).mean()


def data_limits(values, room_above: float = 0.0) -> tuple[float, float]:
    """y-axis limits around ``values`` (a margin of a tenth of their range, at least 0.01), kept in [0, 1]
    for scores; ``room_above``: extra headroom, as a share of the span, for labels above the bars."""
    v = pd.Series(values, dtype=float).dropna()
    if v.empty:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    pad = max(0.1 * (hi - lo), 0.01)
    lo, hi = lo - pad, hi + pad
    hi += room_above * (hi - lo)
    return (max(lo, 0.0), min(hi, 1.0)) if v.min() >= 0 and v.max() <= 1 else (lo, hi)


def axis_note(ax, label: str) -> None:
    """``label`` as the y label, with where the axis starts when it is not at 0 (bars then differ in length
    by more than their values do)."""
    lo = ax.get_ylim()[0]
    ax.set_ylabel(label + (f"\n(axis from {lo:.2f}, not from 0)" if lo > 0 else ""))


def language_figure(tables: dict[str, pd.DataFrame], dataset: str):
    """One panel per setting; per query language one bar per source, each labelled with its value; the
    y axis of each panel spans its values, not 0-1."""
    langs = sorted(set().union(*(set(t["lang"]) for t in tables.values())))
    unseen = sorted(set().union(*(set(t.loc[~t["seen"].astype(bool), "lang"]) for t in tables.values())))
    fig, axes = plt.subplots(len(SETTINGS), 1, figsize=(max(8.0, 0.9 * len(langs) + 3), 2.9 * len(SETTINGS)),
                             sharex=True)
    width = 0.8 / len(tables)
    many = len(tables) > 1
    for ax, setting in zip(axes, SETTINGS, strict=True):
        shown = []
        for i, (name, t) in enumerate(tables.items()):
            values = t.set_index("lang")[setting].reindex(langs)
            bars = ax.bar([x + (i - (len(tables) - 1) / 2) * width for x in range(len(langs))], values, width,
                          label=name)
            ax.bar_label(bars, labels=["" if pd.isna(v) else f"{v:.3f}" for v in values], padding=2,
                         fontsize=6 if many else 7, rotation=90 if many else 0)
            shown += values.tolist()
        ax.set_ylim(*data_limits(shown, room_above=0.35 if many else 0.15))
        axis_note(ax, setting.replace("_map", " mAP"))
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(range(len(langs)), [f"{lang}*" if lang in unseen else lang for lang in langs])
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    axes[0].set_title(f"{dataset}: " + " vs ".join(tables) + ("  (* unseen in training)" if unseen else ""))
    fig.tight_layout()
    return fig


def language_bars(tables: dict[str, pd.DataFrame], dataset: str, out: Path) -> Path:
    """:func:`language_figure` as ``<out>/<dataset>-languages.png``."""
    fig = language_figure(tables, dataset)
    path = out / f"{dataset}-languages.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def training_figure(curves: dict[str, dict]):
    """Training loss (raw, faint, and its EMA) and dev-set score per step, one colour per source; a dashed
    vertical line marks the step each source kept (``curves[name]["kept"]``)."""
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(12, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    spans = []
    for i, (name, c) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        loss, score, kept = c.get("loss"), c.get("score"), c.get("kept")
        if loss is not None and len(loss):
            y = loss.iloc[:, -1]
            span = min(50, max(5, round(len(y) / 6)))  # per-step InfoNCE of one batch is noisy
            spans.append(span)
            ax_loss.plot(loss["step"], y, color=colour, lw=0.8, alpha=0.25)
            ax_loss.plot(loss["step"], ema(y, span), color=colour, lw=1.8, label=f"{name} (EMA, span {span})")
        if score is not None and len(score):
            ax_dev.plot(score["step"], score.iloc[:, -1], marker="o", color=colour, label=name)
        if kept is not None:
            for ax in (ax_loss, ax_dev):
                ax.axvline(kept, color=colour, ls="--", lw=1, alpha=0.8)
            ax_dev.text(kept, 0.03 + 0.09 * i, f" kept: step {kept}", color=colour, fontsize=8,
                        transform=ax_dev.get_xaxis_transform(), ha="left", va="bottom")
    ax_loss.set_xlabel("step"), ax_loss.set_ylabel("training InfoNCE loss\n(faint: per step; bold: EMA)")
    ax_loss.set_title("training loss" + (f" (EMA over {spans[0]} steps)" if len(set(spans)) == 1 else ""),
                      fontsize=10)
    ax_dev.set_xlabel("step")
    axis_note(ax_dev, "dev score (mean of mono/cross/multi mAP)")
    ax_dev.set_title("dev score; dashed: the step kept", fontsize=10)
    for ax in (ax_loss, ax_dev):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("training: " + " vs ".join(curves))
    fig.tight_layout()
    return fig


def training_curves(curves: dict[str, dict], out: Path) -> Path:
    """:func:`training_figure` as ``<out>/training.png``."""
    fig = training_figure(curves)
    path = out / "training.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render(sources: list[str], out: Path, repo: Path = ROOT) -> list[Path]:
    """Every plot the sources have data for, into ``out``; returns the files written."""
    revs = {s: resolve(s, repo) for s in sources}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    datasets = sorted({p.name[: -len("-languages.csv")] for p in (repo / "metrics").glob("*-languages.csv")})
    for rev in revs.values():
        if rev is not None:
            listing = subprocess.run(["git", "ls-tree", "--name-only", rev, "metrics/"], cwd=repo,
                                     capture_output=True, text=True).stdout.split()
            datasets += [Path(p).name[: -len("-languages.csv")] for p in listing if p.endswith("-languages.csv")]
    for dataset in sorted(set(datasets)):
        tables = {s: t for s, rev in revs.items()
                  if (t := read(rev, f"metrics/{dataset}-languages.csv", repo)) is not None}
        if tables:
            written.append(language_bars(tables, dataset, out))
    curves = {s: {"loss": read(rev, f"{LIVE}/train/loss.tsv", repo, "\t"),
                  "score": read(rev, f"{LIVE}/dev/score.tsv", repo, "\t")} for s, rev in revs.items()}
    curves = {s: {**c, "kept": kept_step(revs[s], repo)} for s, c in curves.items()
              if any(v is not None for v in c.values())}
    if curves:
        written.append(training_curves(curves, out))
    return written


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exp", nargs="+", default=["workspace"],
                    help="experiment names, git revisions or 'workspace' (default: the workspace)")
    ap.add_argument("--out", required=True, help="folder for the PNG files (created)")
    args = ap.parse_args(argv)
    for path in render(args.exp, Path(args.out)):
        print(path)


if __name__ == "__main__":
    main()
